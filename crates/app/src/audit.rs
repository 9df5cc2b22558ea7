//! The audit trail service: records events in the transaction of the action
//! they describe, writes signed checkpoints, serves reads and exports (each
//! itself audited), and verifies a tenant's chain.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use karen_domain::audit::{
    ActorRecord, AuditEntry, AuditEvent, AuditFilter, Checkpoint, Outcome, checkpoint_message,
    diff_text,
};
use karen_domain::clock::Clock;
use karen_domain::permission::Permission;
use karen_domain::ports::{AuditRepo, AuditSigner, Store, TenantTx};
use karen_domain::{Actor, Result, TenantContext, TenantId, TenantScope};
use serde::Serialize;
use serde_json::Value;

mod platform;
mod verify;

/// Metric of events appended.
pub const EVENTS_METRIC: &str = "karen_audit_events_total";
/// Metric of platform events that could not be written after their action.
pub const PLATFORM_WRITE_FAILURES_METRIC: &str = "karen_audit_platform_write_failures_total";
/// Metric of permission refusals whose audit event could not be written.
pub const DENIAL_WRITE_FAILURES_METRIC: &str = "karen_audit_denial_write_failures_total";
/// Metric of failed verifications.
pub const VERIFICATION_FAILURES_METRIC: &str = "karen_audit_verification_failures_total";

/// Where a request came from, recorded with each event it causes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

tokio::task_local! {
    static REQUEST: RequestInfo;
}

/// Runs `future` with `info` as the request context of the events it records
/// (the HTTP layer wraps every request in this).
pub async fn with_request<F: Future>(info: RequestInfo, future: F) -> F::Output {
    REQUEST.scope(info, future).await
}

/// The request context events recorded now would carry (for work handed to
/// another task, which replays it with [`with_request`]).
pub(crate) fn current_request() -> RequestInfo {
    REQUEST.try_with(Clone::clone).unwrap_or_default()
}

/// How checkpoints are written.
#[derive(Debug, Clone)]
pub struct AuditPolicy {
    /// Sign a checkpoint after every this many events of a tenant (0: never by count).
    pub checkpoint_every: u64,
    /// Sign a checkpoint of every tenant with new events this often (`None`: never by time).
    pub checkpoint_interval: Option<Duration>,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            checkpoint_interval: Some(Duration::from_secs(3600)),
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct Record {
    action: &'static str,
    target_type: Option<&'static str>,
    target_id: Option<String>,
    outcome: Outcome,
    before: Option<Value>,
    after: Option<Value>,
}

impl Record {
    /// A successful `action` (a stable dotted name).
    pub fn new(action: &'static str) -> Self {
        Self {
            action,
            target_type: None,
            target_id: None,
            outcome: Outcome::Success,
            before: None,
            after: None,
        }
    }

    /// What the action was about.
    pub fn target(mut self, kind: &'static str, id: impl ToString) -> Self {
        self.target_type = Some(kind);
        self.target_id = Some(id.to_string());
        self
    }

    /// How it ended.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// The state before a change (secrets are redacted when recorded).
    pub fn before(mut self, value: &impl Serialize) -> Self {
        self.before = serde_json::to_value(value).ok();
        self
    }

    /// The state after a change (secrets are redacted when recorded).
    pub fn after(mut self, value: &impl Serialize) -> Self {
        self.after = serde_json::to_value(value).ok();
        self
    }
}

/// The audit trail.
pub struct AuditTrail {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    signer: Option<Arc<dyn AuditSigner>>,
    /// Public keys of earlier signing keys, by key id: their checkpoints
    /// still verify after a rotation.
    retired_keys: BTreeMap<String, Vec<u8>>,
    policy: AuditPolicy,
}

/// A page of events.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    /// The sequence number to pass as `after` for the next page.
    pub next_cursor: Option<i64>,
}

/// The first problem verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    /// The first sequence number that does not verify.
    pub seq: i64,
    /// `hash_mismatch`, `broken_link`, `missing_event`, `missing_prefix`,
    /// `checkpoint_mismatch`, `bad_signature`, `unknown_key`, `truncated` or
    /// `undeclared_erasure`.
    pub kind: &'static str,
    pub detail: String,
}

/// What verification of one tenant's chain found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub tenant_id: TenantId,
    pub events: u64,
    pub checkpoints: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub problem: Option<VerifyProblem>,
}

impl VerifyReport {
    /// Whether the chain verified.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

impl AuditTrail {
    /// A trail over `store`; without a signer no checkpoints are written.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        signer: Option<Arc<dyn AuditSigner>>,
        policy: AuditPolicy,
    ) -> Self {
        Self {
            store,
            clock,
            signer,
            retired_keys: BTreeMap::new(),
            policy,
        }
    }

    /// Also accepts checkpoints signed by these retired raw Ed25519 public
    /// keys (a key rotation keeps the old checkpoints verifiable).
    pub fn with_retired_keys(mut self, public_keys: Vec<Vec<u8>>) -> Self {
        self.retired_keys = public_keys
            .into_iter()
            .map(|key| (karen_domain::audit::key_id_of(&key), key))
            .collect();
        self
    }

    /// The public key that checks signatures by `key_id`: the current
    /// signing key's or a retired one's.
    fn verifying_key(&self, key_id: &str) -> Option<&[u8]> {
        match &self.signer {
            Some(signer) if signer.key_id() == key_id => Some(signer.public_key()),
            _ => self.retired_keys.get(key_id).map(Vec::as_slice),
        }
    }

    /// The checkpoint policy.
    pub fn policy(&self) -> &AuditPolicy {
        &self.policy
    }

    /// The checkpoint key's id and raw Ed25519 public key, if checkpoints are signed.
    pub fn public_key(&self) -> Option<(String, Vec<u8>)> {
        self.signer
            .as_ref()
            .map(|s| (s.key_id().to_owned(), s.public_key().to_vec()))
    }

    /// Appends an event in `tx` (the transaction of the action): if the append
    /// fails the action fails, and if the action rolls back so does the event.
    pub async fn record(
        &self,
        tx: &mut dyn TenantTx,
        actor: Actor,
        record: Record,
    ) -> Result<AuditEvent> {
        let chain = tx.tenant_id();
        self.append(tx.audit(), chain, actor, record).await
    }

    /// Appends to `chain` (the tenant's, or the platform's) and signs a
    /// checkpoint when the policy's count is reached.
    async fn append(
        &self,
        chain: &mut dyn AuditRepo,
        chain_id: TenantId,
        actor: Actor,
        record: Record,
    ) -> Result<AuditEvent> {
        let info = current_request();
        let entry = AuditEntry {
            actor: ActorRecord::of(actor),
            action: record.action.to_owned(),
            target_type: record.target_type.map(str::to_owned),
            target_id: record.target_id,
            outcome: record.outcome,
            ip: info.ip,
            user_agent: info.user_agent,
            request_id: info.request_id,
            diff: diff_text(record.before, record.after),
            at: self.clock.now(),
        };
        let event = chain.append_audit(entry).await?;
        metrics::counter!(EVENTS_METRIC).increment(1);
        let every = i64::try_from(self.policy.checkpoint_every).unwrap_or(0);
        if every > 0 && event.seq % every == 0 {
            self.sign_in(chain, chain_id, event.seq, event.hash).await?;
        }
        Ok(event)
    }

    /// Records an event in a transaction of its own (reads, which run in
    /// read transactions). The caller returns the data only if this succeeds.
    pub async fn record_alone(
        &self,
        scope: TenantScope,
        actor: Actor,
        record: Record,
    ) -> Result<AuditEvent> {
        let mut tx = self.store.tenant(scope).await?;
        let event = self.record(&mut *tx, actor, record).await?;
        tx.commit().await?;
        Ok(event)
    }

    async fn sign_in(
        &self,
        chain: &mut dyn AuditRepo,
        tenant: TenantId,
        seq: i64,
        hash: [u8; 32],
    ) -> Result<Option<Checkpoint>> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let signed_at = self.clock.now();
        let message = checkpoint_message(tenant, seq, &hash, signed_at);
        let checkpoint = Checkpoint {
            tenant_id: tenant,
            seq,
            hash,
            signed_at: karen_domain::clock::from_millis(karen_domain::clock::to_millis(signed_at)),
            key_id: signer.key_id().to_owned(),
            signature: signer.sign(&message),
        };
        chain.insert_checkpoint(&checkpoint).await?;
        Ok(Some(checkpoint))
    }

    /// Makes sure a signed checkpoint of event `seq` (whose stored hash is
    /// `hash`) exists in `tx`, signing one when needed; `false` without a key.
    /// The caller has verified the chain up to `seq`, so the stored hash is
    /// the one the chain proves.
    pub(crate) async fn checkpoint_at(
        &self,
        tx: &mut dyn TenantTx,
        seq: i64,
        hash: [u8; 32],
    ) -> Result<bool> {
        if self.signer.is_none() {
            return Ok(false);
        }
        let existing = tx.audit().list_checkpoints(seq - 1, 1).await?;
        if existing.first().is_some_and(|c| c.seq == seq) {
            return Ok(true);
        }
        let tenant = tx.tenant_id();
        Ok(self.sign_in(tx.audit(), tenant, seq, hash).await?.is_some())
    }

    /// Signs a checkpoint of the tenant's newest event, unless the newest
    /// checkpoint already covers it. `None` when there is nothing new or no key.
    pub async fn checkpoint(&self, scope: TenantScope) -> Result<Option<Checkpoint>> {
        if self.signer.is_none() {
            return Ok(None);
        }
        let mut tx = self.store.tenant(scope).await?;
        let checkpoint = self.checkpoint_head(tx.audit(), scope.tenant_id()).await?;
        tx.commit().await?;
        Ok(checkpoint)
    }

    /// A checkpoint asked for by a caller (`POST /v1/audit/checkpoints`):
    /// signs the head as [`AuditTrail::checkpoint`] does, then records who
    /// asked (an `audit.checkpoint` event, after the checkpoint it names).
    pub async fn checkpoint_for(&self, ctx: &TenantContext) -> Result<Option<Checkpoint>> {
        ctx.require(Permission::AuditRead)?;
        if self.signer.is_none() {
            return Ok(None);
        }
        let mut tx = self.store.tenant(ctx.scope()).await?;
        let checkpoint = self.checkpoint_head(tx.audit(), ctx.tenant_id()).await?;
        let mut record = Record::new("audit.checkpoint");
        if let Some(signed) = &checkpoint {
            record = record.target("checkpoint", signed.seq);
        }
        self.record(&mut *tx, ctx.scope().actor(), record).await?;
        tx.commit().await?;
        Ok(checkpoint)
    }

    async fn checkpoint_head(
        &self,
        chain: &mut dyn AuditRepo,
        chain_id: TenantId,
    ) -> Result<Option<Checkpoint>> {
        let Some((seq, hash)) = chain.audit_head().await? else {
            return Ok(None);
        };
        let last = chain.last_checkpoint().await?.map_or(0, |c| c.seq);
        if last >= seq {
            return Ok(None);
        }
        self.sign_in(chain, chain_id, seq, hash).await
    }

    /// One page of the caller's tenant's events (the read is itself audited).
    pub async fn list(
        &self,
        ctx: &TenantContext,
        filter: &AuditFilter,
        after: i64,
        limit: u32,
    ) -> Result<AuditPage> {
        ctx.require(Permission::AuditRead)?;
        let mut tx = self.store.tenant(ctx.scope()).await?;
        let mut items = tx
            .audit()
            .list_audit(filter, after, i64::from(limit) + 1)
            .await?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.seq)
        } else {
            None
        };
        self.record(&mut *tx, ctx.scope().actor(), Record::new("audit.read"))
            .await?;
        tx.commit().await?;
        Ok(AuditPage { items, next_cursor })
    }

    /// Records an export of the trail before it is streamed.
    pub async fn begin_export(&self, ctx: &TenantContext, format: &'static str) -> Result<()> {
        ctx.require(Permission::AuditRead)?;
        self.record_alone(
            ctx.scope(),
            ctx.scope().actor(),
            Record::new("audit.export").target("audit_export", format),
        )
        .await
        .map(drop)
    }

    /// A batch of an export (not audited again: `begin_export` recorded it).
    pub async fn export_batch(
        &self,
        ctx: &TenantContext,
        filter: &AuditFilter,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>> {
        ctx.require(Permission::AuditRead)?;
        let mut tx = self.store.tenant_read(ctx.scope()).await?;
        let items = tx.audit().list_audit(filter, after, limit).await?;
        tx.commit().await?;
        Ok(items)
    }

    /// The tenant's checkpoints, oldest first.
    pub async fn checkpoints(
        &self,
        ctx: &TenantContext,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Checkpoint>> {
        ctx.require(Permission::AuditRead)?;
        let mut tx = self.store.tenant_read(ctx.scope()).await?;
        let items = tx.audit().list_checkpoints(after, i64::from(limit)).await?;
        tx.commit().await?;
        Ok(items)
    }

    /// Checks a tenant's chain: every hash, every link, every checkpoint's
    /// signature and hash, and that no event after the newest checkpoint's
    /// sequence number is missing. Reports the first problem.
    pub async fn verify(&self, scope: TenantScope) -> Result<VerifyReport> {
        let tenant = scope.tenant_id();
        let mut tx = self.store.tenant_read(scope).await?;
        let report = self.verify_chain(tx.audit(), tenant, Some(scope)).await?;
        tx.commit().await?;
        Ok(report)
    }
}
