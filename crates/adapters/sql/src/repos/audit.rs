//! The audit trail: appends under the tenant's chain lock, reads in sequence
//! order. Nothing here updates or deletes an event (tenant deletion aside).

use async_trait::async_trait;
use karen_domain::audit::personal::SaltSeed;
use karen_domain::audit::{
    ActorRecord, AuditEntry, AuditEvent, AuditFilter, ChainHash, Checkpoint, GENESIS_HASH, Outcome,
    PersonalSeal,
};
use karen_domain::clock::to_millis;
use karen_domain::ports::AuditRepo;
use karen_domain::{Error, Result, TenantId};
use time::OffsetDateTime;

use super::batch::statement;
use crate::conn::{Query, Row, Tx};
use crate::rows;
use crate::tenant::SqlTenantTx;

/// The most events one INSERT writes: 32 rows of 16 parameters each (the
/// tenant's `$1` is shared) stay under 999, SQLite's historical limit.
const INSERT_ROWS: usize = 32;

/// The columns of an event after `tenant_id`, in the order they are bound.
const EVENT_COLUMNS: [&str; 16] = [
    "seq",
    "at",
    "actor_kind",
    "actor_id",
    "actor_user_id",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "ip",
    "user_agent",
    "request_id",
    "diff",
    "prev_hash",
    "hash",
    "pii_salt",
];

/// The head of the multi-row INSERT (see [`super::batch::statement`]): the
/// tenant, then the [`EVENT_COLUMNS`] of each event.
const INSERT_HEAD: &str = "INSERT INTO audit_events (tenant_id, seq, at, actor_kind, actor_id, \
    actor_user_id, action, target_type, target_id, outcome, ip, user_agent, request_id, diff, \
    prev_hash, hash, pii_salt) VALUES ";

/// Binds an event's [`EVENT_COLUMNS`], in order, to `query`.
pub(super) fn bind_event(query: Query, event: AuditEvent) -> Query {
    let (pii_salt, _) = event.personal.stored();
    let e = event.entry;
    query
        .bind(event.seq)
        .bind(to_millis(e.at))
        .bind(e.actor.kind)
        .bind(e.actor.id)
        .bind(e.actor.user_id)
        .bind(e.action)
        .bind(e.target_type)
        .bind(e.target_id)
        .bind(e.outcome.as_str())
        .bind(e.ip)
        .bind(e.user_agent)
        .bind(e.request_id)
        .bind(e.diff)
        .bind(event.prev_hash.to_vec())
        .bind(event.hash.to_vec())
        .bind(pii_salt)
}

/// The filter of [`AuditRepo::list_audit`] after `$select` (which ends in
/// `WHERE` or `AND`; `$1` is the chain's id), in sequence order.
macro_rules! filtered_events {
    ($select:literal) => {
        concat!(
            $select,
            " seq > $2 \
            AND ($3 IS NULL OR at >= $3) AND ($4 IS NULL OR at < $4) \
            AND ($5 IS NULL OR actor_kind = $5) AND ($6 IS NULL OR actor_id = $6) \
            AND ($7 IS NULL OR action = $7) AND ($8 IS NULL OR target_type = $8) \
            AND ($9 IS NULL OR target_id = $9) AND ($10 IS NULL OR outcome = $10) \
            ORDER BY seq LIMIT $11"
        )
    };
}
pub(super) use filtered_events;

/// Binds `$2`… of [`filtered_events!`].
pub(super) fn bind_filter(query: Query, filter: &AuditFilter, after_seq: i64, limit: i64) -> Query {
    query
        .bind(after_seq)
        .bind(filter.from.map(to_millis))
        .bind(filter.until.map(to_millis))
        .bind(filter.actor_kind)
        .bind(filter.actor_id.clone())
        .bind(filter.action.clone())
        .bind(filter.target_type.clone())
        .bind(filter.target_id.clone())
        .bind(filter.outcome.map(Outcome::as_str))
        .bind(limit)
}

fn chain_hash(row: &Row, column: &str) -> Result<ChainHash> {
    row.get::<Vec<u8>>(column)?
        .try_into()
        .map_err(|_| Error::internal(format!("stored audit {column} is not 32 bytes")))
}

pub(super) fn event(row: &Row) -> Result<AuditEvent> {
    let actor = ActorRecord::stored(
        &row.get::<String>("actor_kind")?,
        row.get("actor_id")?,
        row.get("actor_user_id")?,
    )?;
    Ok(AuditEvent {
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        seq: row.get("seq")?,
        entry: AuditEntry {
            actor,
            action: row.get("action")?,
            target_type: row.get("target_type")?,
            target_id: row.get("target_id")?,
            outcome: Outcome::parse(&row.get::<String>("outcome")?)
                .map_err(|e| Error::internal(format!("stored audit outcome: {e}")))?,
            ip: row.get("ip")?,
            user_agent: row.get("user_agent")?,
            request_id: row.get("request_id")?,
            diff: row.get("diff")?,
            at: rows::time(row, "at")?,
        },
        prev_hash: chain_hash(row, "prev_hash")?,
        hash: chain_hash(row, "hash")?,
        personal: PersonalSeal::from_stored(
            row.get("pii_salt")?,
            row.get::<Option<String>>("redactions")?.as_deref(),
        )?,
    })
}

pub(super) fn checkpoint(row: &Row) -> Result<Checkpoint> {
    Ok(Checkpoint {
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        seq: row.get("seq")?,
        hash: chain_hash(row, "hash")?,
        signed_at: rows::time(row, "signed_at")?,
        key_id: row.get("key_id")?,
        signature: row.get("signature")?,
    })
}

impl SqlTenantTx {
    /// The chain's head before this append. The first append of a
    /// transaction takes the chain lock (the UPDATE locks the head row on
    /// PostgreSQL until the transaction ends; SQLite's single writer
    /// serialises appends by itself) and reads the head; later appends of the
    /// same transaction continue from the head it keeps, which
    /// [`SqlTenantTx::flush_audit_head`] writes back once, before commit.
    async fn head_for_append(&mut self) -> Result<(i64, ChainHash)> {
        if let Some(head) = self.audit_head {
            return Ok(head);
        }
        let lock = "UPDATE audit_heads SET seq = seq WHERE tenant_id = $1 RETURNING seq, hash";
        let row = match self.tx.fetch_optional(self.q(lock)).await? {
            Some(row) => row,
            None => {
                let start = self
                    .q("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (tenant_id) DO NOTHING")
                    .bind(GENESIS_HASH.to_vec());
                if self.tx.execute(start).await? == 1 {
                    return Ok((0, GENESIS_HASH));
                }
                // A concurrent first append created the head (and has committed by now).
                self.tx
                    .fetch_optional(self.q(lock))
                    .await?
                    .ok_or_else(|| Error::internal("the audit chain head vanished"))?
            }
        };
        Ok((row.get::<i64>("seq")?, chain_hash(&row, "hash")?))
    }

    /// Inserts the events this transaction appended and has not written yet.
    /// Appends are kept in memory and written in multi-row INSERTs (of up to
    /// [`INSERT_ROWS`] events, at the latest when the transaction commits):
    /// one statement instead of one per event. They stay in the transaction
    /// of the action they record, so a failing write still fails the commit
    /// and rolls the action back. Every read of the trail in this transaction
    /// calls this first, so it sees its own appends.
    pub(crate) async fn flush_audit(&mut self) -> Result<()> {
        while !self.audit_pending.is_empty() {
            let rows = 1usize << self.audit_pending.len().min(INSERT_ROWS).ilog2();
            let sql = statement(INSERT_HEAD, EVENT_COLUMNS.len(), rows, "");
            let mut insert = self.q(sql);
            for event in self.audit_pending.drain(..rows) {
                insert = bind_event(insert, event);
            }
            self.tx.execute(insert).await?;
        }
        Ok(())
    }

    /// Writes this transaction's pending events, then its chain head to the
    /// head row (before commit).
    pub(crate) async fn flush_audit_head(&mut self) -> Result<()> {
        self.flush_audit().await?;
        let Some((seq, hash)) = self.audit_head.take() else {
            return Ok(());
        };
        let head = self
            .q("UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1")
            .bind(seq)
            .bind(hash.to_vec());
        self.tx.execute(head).await.map(drop)
    }

    /// Removes the tenant's audit rows during a tenant purge: through the
    /// owner's guarded function on PostgreSQL (the application role may not
    /// delete audit rows), directly on SQLite (a trigger allows it only while
    /// the tenant is being deleted).
    pub(crate) async fn purge_audit(&mut self, table: &str) -> Result<u64> {
        self.flush_audit().await?;
        let postgres = matches!(self.tx, Tx::Postgres(..));
        let removed = match (table, postgres) {
            ("audit_heads", _) => {
                self.audit_head = None;
                return self
                    .tx
                    .execute(self.q("DELETE FROM audit_heads WHERE tenant_id = $1"))
                    .await;
            }
            ("audit_forwarded", _) => {
                return self
                    .tx
                    .execute(self.q("DELETE FROM audit_forwarded WHERE tenant_id = $1"))
                    .await;
            }
            ("audit_events", true) => {
                self.q("SELECT karen_audit_purge_tenant($1, 'events') AS removed")
            }
            ("audit_checkpoints", true) => {
                self.q("SELECT karen_audit_purge_tenant($1, 'checkpoints') AS removed")
            }
            ("audit_events", false) => {
                return self
                    .tx
                    .execute(self.q("DELETE FROM audit_events WHERE tenant_id = $1"))
                    .await;
            }
            ("audit_checkpoints", false) => {
                return self
                    .tx
                    .execute(self.q("DELETE FROM audit_checkpoints WHERE tenant_id = $1"))
                    .await;
            }
            _ => return Err(Error::internal(format!("{table} is not an audit table"))),
        };
        let row = self.tx.fetch_one(removed).await?;
        Ok(u64::try_from(row.get::<i64>("removed")?).unwrap_or(0))
    }
}

#[async_trait]
impl AuditRepo for SqlTenantTx {
    async fn append_audit(&mut self, entry: AuditEntry) -> Result<AuditEvent> {
        let (prev_seq, prev_hash) = self.head_for_append().await?;
        let seed = match &self.audit_salts {
            Some(seed) => seed,
            // 244 random bits from the operating system, once per transaction.
            None => self.audit_salts.insert(SaltSeed::new(
                *uuid::Uuid::new_v4().as_bytes(),
                *uuid::Uuid::new_v4().as_bytes(),
            )),
        };
        let salt = PersonalSeal::Salted(seed.salt(prev_seq + 1));
        let event = entry.seal(self.tenant_id_value(), prev_seq, prev_hash, salt);
        self.audit_head = Some((event.seq, event.hash));
        self.audit_pending.push(event.clone());
        if self.audit_pending.len() >= INSERT_ROWS {
            self.flush_audit().await?;
        }
        Ok(event)
    }

    async fn list_audit(
        &mut self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>> {
        self.flush_audit().await?;
        let q = self.q(filtered_events!(
            "SELECT * FROM audit_events WHERE tenant_id = $1 AND"
        ));
        let q = bind_filter(q, filter, after_seq, limit);
        self.tx.fetch_all(q).await?.iter().map(event).collect()
    }

    async fn audit_head(&mut self) -> Result<Option<(i64, ChainHash)>> {
        self.flush_audit().await?;
        let q = self
            .q("SELECT seq, hash FROM audit_events WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1");
        match self.tx.fetch_optional(q).await? {
            Some(row) => Ok(Some((row.get("seq")?, chain_hash(&row, "hash")?))),
            None => Ok(None),
        }
    }

    async fn insert_checkpoint(&mut self, c: &Checkpoint) -> Result<()> {
        let q = self
            .q("INSERT INTO audit_checkpoints (tenant_id, seq, hash, signed_at, key_id, signature) \
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, seq) DO NOTHING")
            .bind(c.seq)
            .bind(c.hash.to_vec())
            .bind(to_millis(c.signed_at))
            .bind(c.key_id.clone())
            .bind(c.signature.clone());
        self.tx.execute(q).await.map(drop)
    }

    async fn list_checkpoints(&mut self, after_seq: i64, limit: i64) -> Result<Vec<Checkpoint>> {
        let q = self
            .q("SELECT * FROM audit_checkpoints WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(after_seq)
            .bind(limit);
        self.tx.fetch_all(q).await?.iter().map(checkpoint).collect()
    }

    async fn forwarded_up_to(&mut self, sink: &str) -> Result<i64> {
        let q = self
            .q("SELECT seq FROM audit_forwarded WHERE tenant_id = $1 AND sink = $2")
            .bind(sink.to_owned());
        match self.tx.fetch_optional(q).await? {
            Some(row) => row.get("seq"),
            None => Ok(0),
        }
    }

    async fn set_forwarded_up_to(
        &mut self,
        sink: &str,
        seq: i64,
        at: OffsetDateTime,
    ) -> Result<()> {
        let q = self
            .q("INSERT INTO audit_forwarded (tenant_id, sink, seq, updated_at) VALUES ($1, $2, $3, $4) \
                ON CONFLICT (tenant_id, sink) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at")
            .bind(sink.to_owned())
            .bind(seq)
            .bind(to_millis(at));
        self.tx.execute(q).await.map(drop)
    }

    async fn redact_audit(
        &mut self,
        seq: i64,
        erased: &AuditEntry,
        personal: &PersonalSeal,
    ) -> Result<()> {
        self.flush_audit().await?;
        let (salt, redactions) = personal.stored();
        if salt.is_some() || redactions.is_none() {
            return Err(Error::internal(
                "an erased audit event must carry its redactions",
            ));
        }
        // PostgreSQL: the owner's guarded function (the application role may
        // not update audit rows). SQLite: the update trigger lets through only
        // a change of the personal fields that ends the row's salt.
        let sql = if matches!(self.tx, Tx::Postgres(..)) {
            "SELECT karen_audit_redact($1, $2, $3, $4, $5, $6, $7, $8, $9) AS redacted"
        } else {
            "UPDATE audit_events SET actor_id = $3, actor_user_id = $4, target_id = $5, ip = $6, \
             user_agent = $7, diff = $8, redactions = $9, pii_salt = NULL \
             WHERE tenant_id = $1 AND seq = $2 RETURNING 1 AS redacted"
        };
        let q = self
            .q(sql)
            .bind(seq)
            .bind(erased.actor.id.clone())
            .bind(erased.actor.user_id.clone())
            .bind(erased.target_id.clone())
            .bind(erased.ip.clone())
            .bind(erased.user_agent.clone())
            .bind(erased.diff.clone())
            .bind(redactions);
        self.tx
            .fetch_optional(q)
            .await?
            .map(drop)
            .ok_or_else(|| Error::internal(format!("audit event {seq} is missing")))
    }

    async fn last_checkpoint(&mut self) -> Result<Option<Checkpoint>> {
        let q = self
            .q("SELECT * FROM audit_checkpoints WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1");
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(checkpoint)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_names_the_bound_columns_in_order() {
        let columns = format!("(tenant_id, {}) VALUES ", EVENT_COLUMNS.join(", "));
        assert!(INSERT_HEAD.ends_with(&columns), "{INSERT_HEAD}");
        assert_eq!(
            statement(INSERT_HEAD, EVENT_COLUMNS.len(), 2, "")
                .matches("($1, ")
                .count(),
            2
        );
    }
}
