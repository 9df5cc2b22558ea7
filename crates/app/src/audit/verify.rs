//! Verification of one hash chain (a tenant's or the platform's): every
//! hash, every link, every checkpoint's signature and hash, the erasure
//! ledger, and that nothing after the newest checkpoint is missing.
//!
//! A tenant's chain is read as two halves at once, each through its own read
//! transaction (on SQLite each connection has its own worker thread), and
//! each half hashes batch n on a blocking thread while it reads batch n + 1:
//! an event's hash depends only on its own row, so hashing needs no order.
//! The halves are then stitched: the second must start right after the
//! first ends, at the hash the first ends with.

use std::collections::BTreeMap;
use std::sync::Arc;

use karen_domain::audit::personal::{ErasureDeclaration, ErasureLedger};
use karen_domain::audit::{
    AuditEvent, AuditFilter, ChainHash, Checkpoint, GENESIS_HASH, checkpoint_message, event_hash,
};
use karen_domain::ports::AuditRepo;
use karen_domain::{Error, Result, TenantId, TenantScope};

use super::{AuditTrail, VERIFICATION_FAILURES_METRIC, VerifyProblem, VerifyReport};

/// Events read per statement.
const VERIFY_BATCH: i64 = 10_000;

fn problem(seq: i64, kind: &'static str, detail: String) -> VerifyProblem {
    VerifyProblem { seq, kind, detail }
}

/// Problems as found, of which the report names the one at the lowest
/// sequence number (the first noted among equals).
#[derive(Default)]
struct Problems(Option<VerifyProblem>);

impl Problems {
    fn note(&mut self, found: VerifyProblem) {
        if self.0.as_ref().is_none_or(|first| found.seq < first.seq) {
            self.0 = Some(found);
        }
    }
}

fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// The hash of each event of `events` in `chain`, each over its own stored
/// previous hash (whether that is the right one is checked in order).
fn event_hashes(chain: TenantId, events: &[AuditEvent]) -> Vec<ChainHash> {
    let mut buffer = Vec::with_capacity(512);
    events
        .iter()
        .map(|event| {
            event_hash(
                &mut buffer,
                chain,
                event.seq,
                &event.prev_hash,
                &event.entry,
                &event.personal,
            )
        })
        .collect()
}

/// What one stretch of the chain holds, checked on its own from its first
/// event's stored previous hash.
#[derive(Default)]
struct Stretch {
    events: u64,
    /// The first event read: its sequence number and stored previous hash.
    first: Option<(i64, ChainHash)>,
    /// The last event verified: its sequence number and hash.
    last: Option<(i64, ChainHash)>,
    /// The last event read (verified or not).
    last_read: Option<i64>,
    problems: Problems,
    /// Erased fields in sequence order: event, field, pseudonym.
    erased: Vec<(i64, usize, String)>,
    declarations: Vec<ErasureDeclaration>,
}

/// Reads and checks the events numbered `from..=to` (those present).
async fn scan(
    audit: &mut dyn AuditRepo,
    chain: TenantId,
    from: i64,
    to: i64,
    checkpoints: &[Checkpoint],
) -> Result<Stretch> {
    let mut stretch = Stretch::default();
    let mut expected: Option<(i64, ChainHash)> = None;
    let mut next_checkpoint = checkpoints.partition_point(|c| c.seq < from);
    let mut after = from - 1;
    let filter = AuditFilter::default();
    let mut hashing: Option<tokio::task::JoinHandle<(Vec<AuditEvent>, Vec<ChainHash>)>> = None;
    'scan: loop {
        let mut batch = if after < to {
            audit.list_audit(&filter, after, VERIFY_BATCH).await?
        } else {
            Vec::new()
        };
        batch.retain(|event| event.seq <= to);
        let next = batch.last().map(|last| last.seq);
        let hashed = hashing.take();
        if let Some(next) = next {
            after = next;
            hashing = Some(tokio::task::spawn_blocking(move || {
                let hashes = event_hashes(chain, &batch);
                (batch, hashes)
            }));
        }
        let Some(hashed) = hashed else {
            if next.is_none() {
                break;
            }
            continue;
        };
        let (events, hashes) = hashed
            .await
            .map_err(|e| Error::internal(format!("audit hashing failed: {e}")))?;
        for (event, hash) in events.iter().zip(hashes) {
            stretch.events += 1;
            stretch.last_read = Some(event.seq);
            let (want_seq, want_prev) = *expected.get_or_insert((event.seq, event.prev_hash));
            stretch.first.get_or_insert((event.seq, event.prev_hash));
            if event.seq != want_seq {
                stretch.problems.note(problem(
                    want_seq,
                    "missing_event",
                    format!("event {want_seq} is missing (next is {})", event.seq),
                ));
                break 'scan;
            }
            if event.prev_hash != want_prev {
                stretch.problems.note(problem(
                    event.seq,
                    "broken_link",
                    format!(
                        "event {} does not point at the hash of the event before it",
                        event.seq
                    ),
                ));
                break 'scan;
            }
            if hash != event.hash {
                stretch.problems.note(problem(
                    event.seq,
                    "hash_mismatch",
                    format!("event {} does not match its hash", event.seq),
                ));
                break 'scan;
            }
            while let Some(c) = checkpoints.get(next_checkpoint) {
                if c.seq > event.seq {
                    break;
                }
                if c.seq == event.seq && c.hash != hash {
                    stretch.problems.note(problem(
                        event.seq,
                        "checkpoint_mismatch",
                        format!("event {} differs from its signed checkpoint", event.seq),
                    ));
                    break 'scan;
                }
                next_checkpoint += 1;
            }
            for (index, by) in event.personal.erased_by() {
                stretch.erased.push((event.seq, index, by.to_owned()));
            }
            if let Some(declared) = ErasureDeclaration::of(&event.entry) {
                stretch.declarations.push(declared);
            }
            stretch.last = Some((event.seq, hash));
            expected = Some((event.seq + 1, hash));
        }
        if next.is_none() {
            break;
        }
    }
    Ok(stretch)
}

/// The first erased field no erasure event accounts for: every erased field
/// must belong to an erasure whose `user.erase` event declares exactly the
/// fields found (or, when retention removed the start of the erasure's
/// fields, no more than it declared).
fn undeclared_erasure(
    found: &BTreeMap<String, ErasureLedger>,
    declared: &BTreeMap<String, ErasureDeclaration>,
    chain_start: Option<i64>,
) -> Option<VerifyProblem> {
    for (pseudonym, ledger) in found {
        let undeclared = |detail: String| problem(ledger.first_seq, "undeclared_erasure", detail);
        let Some(declaration) = declared.get(pseudonym) else {
            return Some(undeclared(format!(
                "event {} has fields erased as {pseudonym}, which no erasure event records",
                ledger.first_seq
            )));
        };
        let whole = chain_start.is_some_and(|start| start <= declaration.first_seq);
        let consistent = if whole {
            ledger.fields == declaration.fields
                && ledger.first_seq == declaration.first_seq
                && ledger.digest() == declaration.digest
        } else {
            ledger.fields <= declaration.fields
        };
        if !consistent {
            return Some(undeclared(format!(
                "the fields erased as {pseudonym} differ from what its erasure event records \
                 ({} found, {} recorded)",
                ledger.fields, declaration.fields
            )));
        }
    }
    None
}

impl AuditTrail {
    /// Checks that every checkpoint is signed by a known key.
    fn check_signatures(&self, chain: TenantId, checkpoints: &[Checkpoint], found: &mut Problems) {
        for checkpoint in checkpoints {
            match self.verifying_key(&checkpoint.key_id) {
                None => found.note(problem(
                    checkpoint.seq,
                    "unknown_key",
                    format!(
                        "checkpoint at {} is signed by key {}, which is neither the configured \
                         key nor a retired one",
                        checkpoint.seq, checkpoint.key_id
                    ),
                )),
                Some(public_key) => {
                    let message = checkpoint_message(
                        chain,
                        checkpoint.seq,
                        &checkpoint.hash,
                        checkpoint.signed_at,
                    );
                    if !verify_signature(public_key, &message, &checkpoint.signature) {
                        found.note(problem(
                            checkpoint.seq,
                            "bad_signature",
                            format!("the signature of checkpoint {} is invalid", checkpoint.seq),
                        ));
                    }
                }
            }
        }
    }

    /// Verifies `chain` read through `audit`. With `second`, the later half
    /// of a chain of two events or more is read at the same time through a
    /// read transaction of that tenant scope.
    pub(super) async fn verify_chain(
        &self,
        audit: &mut dyn AuditRepo,
        chain: TenantId,
        second: Option<TenantScope>,
    ) -> Result<VerifyReport> {
        let mut checkpoints = Vec::new();
        let mut after = 0;
        loop {
            let batch = audit.list_checkpoints(after, 1000).await?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            checkpoints.extend(batch);
        }
        let checkpoints = Arc::new(checkpoints);
        let mut found = Problems::default();
        self.check_signatures(chain, &checkpoints, &mut found);

        let oldest = audit
            .list_audit(&AuditFilter::default(), 0, 1)
            .await?
            .first()
            .map(|event| event.seq);
        let newest = audit.audit_head().await?.map(|(seq, _)| seq);
        let (stretches, ends) = match (oldest, newest, second) {
            (Some(first), Some(last), Some(scope)) if last > first => {
                let middle = first + (last - first) / 2;
                let mut tx = self.store.tenant_read(scope).await?;
                let later_checkpoints = checkpoints.clone();
                let later = tokio::spawn(async move {
                    let stretch =
                        scan(tx.audit(), chain, middle + 1, last, &later_checkpoints).await?;
                    tx.commit().await?;
                    Ok::<_, Error>(stretch)
                });
                let earlier = scan(audit, chain, first, middle, &checkpoints).await?;
                let later = later
                    .await
                    .map_err(|e| Error::internal(format!("audit verification failed: {e}")))??;
                (vec![earlier, later], vec![middle])
            }
            (Some(first), Some(last), _) => (
                vec![scan(audit, chain, first, last, &checkpoints).await?],
                Vec::new(),
            ),
            _ => (vec![Stretch::default()], Vec::new()),
        };

        // Where the chain starts: at 1 from the genesis hash, or right after
        // a checkpoint (retention removed the prefix before it).
        if let Some((start, prev)) = stretches[0].first {
            let want = if start == 1 {
                Some(GENESIS_HASH)
            } else {
                checkpoints
                    .iter()
                    .find(|c| c.seq == start - 1)
                    .map(|c| c.hash)
            };
            match want {
                None => found.note(problem(
                    1,
                    "missing_prefix",
                    format!(
                        "the chain starts at {start} without a checkpoint at {}",
                        start - 1
                    ),
                )),
                Some(want) if want != prev => found.note(problem(
                    start,
                    "broken_link",
                    format!("event {start} does not point at the hash of the event before it"),
                )),
                Some(_) => {}
            }
        }
        // Each later stretch continues where the one before it ended.
        for (pair, end) in stretches.windows(2).zip(&ends) {
            let (before, after) = (&pair[0], &pair[1]);
            let ended = before.last.map_or(end - 1, |(seq, _)| seq);
            if before.problems.0.is_none() && ended < *end {
                found.note(problem(
                    ended + 1,
                    "missing_event",
                    format!("event {} is missing", ended + 1),
                ));
            }
            match after.first {
                None => found.note(problem(
                    end + 1,
                    "missing_event",
                    format!("event {} is missing", end + 1),
                )),
                Some((seq, _)) if seq != end + 1 => found.note(problem(
                    end + 1,
                    "missing_event",
                    format!("event {} is missing (next is {seq})", end + 1),
                )),
                Some((seq, prev)) => {
                    if let Some((ended, hash)) = before.last
                        && ended == *end
                        && prev != hash
                    {
                        found.note(problem(
                            seq,
                            "broken_link",
                            format!(
                                "event {seq} does not point at the hash of the event before it"
                            ),
                        ));
                    }
                }
            }
        }

        let mut report = VerifyReport {
            tenant_id: chain,
            events: 0,
            checkpoints: u64::try_from(checkpoints.len()).unwrap_or(0),
            first_seq: stretches[0].first.map(|(seq, _)| seq),
            last_seq: None,
            problem: None,
        };
        let mut erasures: BTreeMap<String, ErasureLedger> = BTreeMap::new();
        let mut declarations: BTreeMap<String, ErasureDeclaration> = BTreeMap::new();
        for stretch in stretches {
            report.events += stretch.events;
            if stretch.last_read.is_some() {
                report.last_seq = stretch.last_read;
            }
            if let Some(first) = stretch.problems.0 {
                found.note(first);
            }
            for (seq, index, by) in stretch.erased {
                erasures.entry(by).or_default().add(seq, index);
            }
            for declared in stretch.declarations {
                declarations.insert(declared.pseudonym.clone(), declared);
            }
        }
        if let Some(p) = undeclared_erasure(&erasures, &declarations, report.first_seq) {
            found.note(p);
        }
        let last_seq = report.last_seq.unwrap_or(0);
        if let Some(newest) = checkpoints.last()
            && newest.seq > last_seq
        {
            found.note(problem(
                last_seq + 1,
                "truncated",
                format!(
                    "events after {last_seq} are missing: a signed checkpoint covers {}",
                    newest.seq
                ),
            ));
        }
        report.problem = found.0;
        if report.problem.is_some() {
            metrics::counter!(VERIFICATION_FAILURES_METRIC).increment(1);
        }
        Ok(report)
    }
}
