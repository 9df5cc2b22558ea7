//! The platform audit chain (operator actions that belong to no tenant) in
//! its own tables, `platform_audit_*` (migration 0021): one chain, hashed and
//! signed under [`PLATFORM_CHAIN`]. Append-only like the tenant trail; no
//! tenant purge or retention reaches it.

use async_trait::async_trait;
use karen_domain::audit::{
    AuditEntry, AuditEvent, AuditFilter, ChainHash, Checkpoint, GENESIS_HASH, PLATFORM_CHAIN,
    PersonalSeal,
};
use karen_domain::clock::to_millis;
use karen_domain::ports::AuditRepo;
use karen_domain::{Error, Result};
use time::OffsetDateTime;

use super::audit::{bind_event, bind_filter, checkpoint, event, filtered_events};
use crate::conn::Query;
use crate::platform::SqlPlatformTx;

impl SqlPlatformTx {
    /// Starts a statement with the platform chain's id bound as `$1` (the
    /// rows carry no id; reads select it as `tenant_id` for the row mappers).
    fn pq(&self, sql: &'static str) -> Query {
        self.tx.query(sql).bind(PLATFORM_CHAIN.as_uuid())
    }

    /// The head, locked until the transaction ends (PostgreSQL row lock;
    /// SQLite's single writer serialises by itself).
    async fn platform_head(&mut self) -> Result<(i64, ChainHash)> {
        let lock = "UPDATE platform_audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash";
        let row = match self.tx.fetch_optional(self.tx.query(lock)).await? {
            Some(row) => row,
            None => {
                let start = self
                    .tx
                    .query("INSERT INTO platform_audit_head (id, seq, hash) VALUES (1, 0, $1) ON CONFLICT (id) DO NOTHING")
                    .bind(GENESIS_HASH.to_vec());
                if self.tx.execute(start).await? == 1 {
                    return Ok((0, GENESIS_HASH));
                }
                self.tx
                    .fetch_optional(self.tx.query(lock))
                    .await?
                    .ok_or_else(|| Error::internal("the platform audit head vanished"))?
            }
        };
        let hash = row
            .get::<Vec<u8>>("hash")?
            .try_into()
            .map_err(|_| Error::internal("stored platform audit hash is not 32 bytes"))?;
        Ok((row.get::<i64>("seq")?, hash))
    }
}

fn unsupported(what: &str) -> Error {
    Error::internal(format!("the platform audit chain has no {what}"))
}

#[async_trait]
impl AuditRepo for SqlPlatformTx {
    async fn append_audit(&mut self, entry: AuditEntry) -> Result<AuditEvent> {
        let (prev_seq, prev_hash) = self.platform_head().await?;
        // Operator actions hold no one's personal data to erase later, but
        // version 2 (salted commitments) keeps one encoding for new events.
        let salt = PersonalSeal::Salted(*uuid::Uuid::new_v4().as_bytes());
        let event = entry.seal(PLATFORM_CHAIN, prev_seq, prev_hash, salt);
        let insert = self.tx.query(
            "INSERT INTO platform_audit_events (seq, at, actor_kind, actor_id, actor_user_id, action, \
                target_type, target_id, outcome, ip, user_agent, request_id, diff, prev_hash, hash, pii_salt) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        );
        let insert = bind_event(insert, event.clone());
        self.tx.execute(insert).await?;
        let head = self
            .tx
            .query("UPDATE platform_audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(event.seq)
            .bind(event.hash.to_vec());
        self.tx.execute(head).await?;
        Ok(event)
    }

    async fn list_audit(
        &mut self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>> {
        let q = self.pq(filtered_events!(
            "SELECT $1 AS tenant_id, e.* FROM platform_audit_events e WHERE"
        ));
        let q = bind_filter(q, filter, after_seq, limit);
        self.tx.fetch_all(q).await?.iter().map(event).collect()
    }

    async fn audit_head(&mut self) -> Result<Option<(i64, ChainHash)>> {
        let q = self.pq(
            "SELECT $1 AS tenant_id, e.* FROM platform_audit_events e ORDER BY seq DESC LIMIT 1",
        );
        match self.tx.fetch_optional(q).await? {
            Some(row) => {
                let newest = event(&row)?;
                Ok(Some((newest.seq, newest.hash)))
            }
            None => Ok(None),
        }
    }

    async fn insert_checkpoint(&mut self, c: &Checkpoint) -> Result<()> {
        if c.tenant_id != PLATFORM_CHAIN {
            return Err(Error::internal(
                "a tenant checkpoint cannot enter the platform chain",
            ));
        }
        let q = self
            .tx
            .query(
                "INSERT INTO platform_audit_checkpoints (seq, hash, signed_at, key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
            )
            .bind(c.seq)
            .bind(c.hash.to_vec())
            .bind(to_millis(c.signed_at))
            .bind(c.key_id.clone())
            .bind(c.signature.clone());
        self.tx.execute(q).await.map(drop)
    }

    async fn list_checkpoints(&mut self, after_seq: i64, limit: i64) -> Result<Vec<Checkpoint>> {
        let q = self
            .pq("SELECT $1 AS tenant_id, c.* FROM platform_audit_checkpoints c WHERE seq > $2 ORDER BY seq LIMIT $3")
            .bind(after_seq)
            .bind(limit);
        self.tx.fetch_all(q).await?.iter().map(checkpoint).collect()
    }

    async fn last_checkpoint(&mut self) -> Result<Option<Checkpoint>> {
        let q = self.pq(
            "SELECT $1 AS tenant_id, c.* FROM platform_audit_checkpoints c ORDER BY seq DESC LIMIT 1",
        );
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(checkpoint)
            .transpose()
    }

    async fn forwarded_up_to(&mut self, _sink: &str) -> Result<i64> {
        Err(unsupported("forwarding"))
    }

    async fn set_forwarded_up_to(
        &mut self,
        _sink: &str,
        _seq: i64,
        _at: OffsetDateTime,
    ) -> Result<()> {
        Err(unsupported("forwarding"))
    }

    async fn redact_audit(
        &mut self,
        _seq: i64,
        _erased: &AuditEntry,
        _personal: &PersonalSeal,
    ) -> Result<()> {
        Err(unsupported("erasure"))
    }
}
