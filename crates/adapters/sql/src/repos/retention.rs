//! Retention: the tenant's policy, legal holds and last run, the expired-row
//! queries, and the removal of an audit prefix ending at a signed checkpoint.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::ports::{AuditPrefix, ExpiredRow, RetentionRepo};
use karen_domain::retention::{
    Expiring, HoldScope, LegalHold, RetentionCounts, RetentionPolicy, RetentionRun,
};
use karen_domain::{ConversationId, Error, LegalHoldId, Result, TenantId, UsageId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::conn::{Row, Tx};
use crate::rows;
use crate::tenant::SqlTenantTx;

fn days(row: &Row, column: &str) -> Result<Option<u32>> {
    Ok(row
        .get::<Option<i32>>(column)?
        .map(|d| u32::try_from(d).unwrap_or(0)))
}

fn to_db(days: Option<u32>) -> Option<i32> {
    days.map(|d| i32::try_from(d).unwrap_or(i32::MAX))
}

fn count(row: &Row, column: &str) -> Result<u64> {
    Ok(u64::try_from(row.get::<i64>(column)?).unwrap_or(0))
}

fn to_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn hold(row: &Row) -> Result<LegalHold> {
    Ok(LegalHold {
        id: LegalHoldId::from_uuid(row.get("id")?),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        scope: HoldScope::stored(&row.get::<String>("scope")?, row.get("target_id")?)?,
        reason: row.get("reason")?,
        created_by: row.get("created_by")?,
        created_at: rows::time(row, "created_at")?,
    })
}

fn chain_hash(row: &Row) -> Result<[u8; 32]> {
    row.get::<Vec<u8>>("hash")?
        .try_into()
        .map_err(|_| Error::internal("stored audit hash is not 32 bytes"))
}

/// The expired rows of each kind, with whom they concern: a conversation's
/// user and itself, a memory's owner and the conversation it was drawn from,
/// a document's uploader, a usage record's caller and conversation.
fn expired_statement(kind: Expiring) -> &'static str {
    match kind {
        Expiring::Conversations => {
            "SELECT id, user_id, id AS conversation_id FROM conversations WHERE tenant_id = $1 \
             AND last_activity_at < $2 AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
        }
        Expiring::Memories => {
            "SELECT id, owner_user_id AS user_id, source_conversation_id AS conversation_id \
             FROM memories WHERE tenant_id = $1 AND updated_at < $2 AND ($3 IS NULL OR id > $3) \
             ORDER BY id LIMIT $4"
        }
        Expiring::Documents => {
            "SELECT id, uploaded_by AS user_id, CAST(NULL AS UUID) AS conversation_id \
             FROM documents WHERE tenant_id = $1 AND updated_at < $2 AND ($3 IS NULL OR id > $3) \
             ORDER BY id LIMIT $4"
        }
        Expiring::Usage => {
            "SELECT id, user_id, conversation_id FROM usage_records WHERE tenant_id = $1 \
             AND created_at < $2 AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
        }
    }
}

#[async_trait]
impl RetentionRepo for SqlTenantTx {
    async fn retention_policy(&mut self) -> Result<Option<RetentionPolicy>> {
        let q = self.q("SELECT * FROM retention_policies WHERE tenant_id = $1");
        let Some(row) = self.tx.fetch_optional(q).await? else {
            return Ok(None);
        };
        Ok(Some(RetentionPolicy {
            conversations_days: days(&row, "conversations_days")?,
            memories_days: days(&row, "memories_days")?,
            documents_days: days(&row, "documents_days")?,
            usage_days: days(&row, "usage_days")?,
            audit_days: days(&row, "audit_days")?,
        }))
    }

    async fn put_retention_policy(
        &mut self,
        policy: &RetentionPolicy,
        at: OffsetDateTime,
    ) -> Result<()> {
        let q = self
            .q("INSERT INTO retention_policies (tenant_id, conversations_days, memories_days, \
                documents_days, usage_days, audit_days, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                ON CONFLICT (tenant_id) DO UPDATE SET conversations_days = excluded.conversations_days, \
                memories_days = excluded.memories_days, documents_days = excluded.documents_days, \
                usage_days = excluded.usage_days, audit_days = excluded.audit_days, \
                updated_at = excluded.updated_at")
            .bind(to_db(policy.conversations_days))
            .bind(to_db(policy.memories_days))
            .bind(to_db(policy.documents_days))
            .bind(to_db(policy.usage_days))
            .bind(to_db(policy.audit_days))
            .bind(to_millis(at));
        self.tx.execute(q).await.map(drop)
    }

    async fn last_retention_run(&mut self) -> Result<Option<RetentionRun>> {
        let q = self.q("SELECT * FROM retention_runs WHERE tenant_id = $1");
        let Some(row) = self.tx.fetch_optional(q).await? else {
            return Ok(None);
        };
        Ok(Some(RetentionRun {
            at: rows::time(&row, "at")?,
            counts: RetentionCounts {
                conversations: count(&row, "conversations")?,
                memories: count(&row, "memories")?,
                documents: count(&row, "documents")?,
                usage_records: count(&row, "usage_records")?,
                audit_events: count(&row, "audit_events")?,
                held: count(&row, "held")?,
            },
        }))
    }

    async fn record_retention_run(&mut self, run: &RetentionRun) -> Result<()> {
        let c = &run.counts;
        let q = self
            .q(
                "INSERT INTO retention_runs (tenant_id, at, conversations, memories, documents, \
                usage_records, audit_events, held) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                ON CONFLICT (tenant_id) DO UPDATE SET at = excluded.at, \
                conversations = excluded.conversations, memories = excluded.memories, \
                documents = excluded.documents, usage_records = excluded.usage_records, \
                audit_events = excluded.audit_events, held = excluded.held",
            )
            .bind(to_millis(run.at))
            .bind(to_count(c.conversations))
            .bind(to_count(c.memories))
            .bind(to_count(c.documents))
            .bind(to_count(c.usage_records))
            .bind(to_count(c.audit_events))
            .bind(to_count(c.held));
        self.tx.execute(q).await.map(drop)
    }

    async fn insert_hold(&mut self, h: &LegalHold) -> Result<()> {
        let q = self
            .q("INSERT INTO legal_holds (tenant_id, id, scope, target_id, reason, created_by, created_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(h.id.as_uuid())
            .bind(h.scope.as_str())
            .bind(h.scope.target_id())
            .bind(h.reason.clone())
            .bind(h.created_by.clone())
            .bind(to_millis(h.created_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn active_hold(&mut self, id: LegalHoldId) -> Result<Option<LegalHold>> {
        let q = self
            .q("SELECT * FROM legal_holds WHERE tenant_id = $1 AND id = $2 AND lifted_at IS NULL")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(hold)
            .transpose()
    }

    async fn active_holds(&mut self) -> Result<Vec<LegalHold>> {
        let q = self
            .q("SELECT * FROM legal_holds WHERE tenant_id = $1 AND lifted_at IS NULL ORDER BY id");
        self.tx.fetch_all(q).await?.iter().map(hold).collect()
    }

    async fn lift_hold(&mut self, id: LegalHoldId, by: &str, at: OffsetDateTime) -> Result<bool> {
        let q = self
            .q("UPDATE legal_holds SET lifted_by = $3, lifted_at = $4 \
                WHERE tenant_id = $1 AND id = $2 AND lifted_at IS NULL")
            .bind(id.as_uuid())
            .bind(by.to_owned())
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? == 1)
    }

    async fn expired(
        &mut self,
        kind: Expiring,
        before: OffsetDateTime,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<ExpiredRow>> {
        let q = self
            .q(expired_statement(kind))
            .bind(to_millis(before))
            .bind(after)
            .bind(limit);
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(|row| {
                Ok(ExpiredRow {
                    id: row.get("id")?,
                    user_id: row.get::<Option<Uuid>>("user_id")?.map(UserId::from_uuid),
                    conversation_id: row
                        .get::<Option<Uuid>>("conversation_id")?
                        .map(ConversationId::from_uuid),
                })
            })
            .collect()
    }

    async fn delete_usage_record(&mut self, id: UsageId) -> Result<bool> {
        let q = self
            .q("DELETE FROM usage_records WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        Ok(self.tx.execute(q).await? == 1)
    }

    async fn audit_prefix_before(&mut self, before: OffsetDateTime) -> Result<Option<AuditPrefix>> {
        // The prefix ends just before the first event at or after `before`
        // (or at the newest event when all are older).
        self.flush_audit().await?;
        let bound = self
            .q("SELECT MIN(seq) AS first_young, (SELECT MIN(seq) FROM audit_events WHERE tenant_id = $1) AS first \
                FROM audit_events WHERE tenant_id = $1 AND at >= $2")
            .bind(to_millis(before));
        let row = self.tx.fetch_one(bound).await?;
        let Some(first) = row.get::<Option<i64>>("first")? else {
            return Ok(None);
        };
        let through = match row.get::<Option<i64>>("first_young")? {
            Some(young) => young - 1,
            None => {
                let head = self.q("SELECT MAX(seq) AS head FROM audit_events WHERE tenant_id = $1");
                let row = self.tx.fetch_one(head).await?;
                row.get::<Option<i64>>("head")?.unwrap_or(0)
            }
        };
        if through < first {
            return Ok(None);
        }
        let q = self
            .q("SELECT hash FROM audit_events WHERE tenant_id = $1 AND seq = $2")
            .bind(through);
        let row = self
            .tx
            .fetch_optional(q)
            .await?
            .ok_or_else(|| Error::internal("an audit event inside the chain is missing"))?;
        Ok(Some(AuditPrefix {
            through_seq: through,
            hash: chain_hash(&row)?,
            events: u64::try_from(through - first + 1).unwrap_or(0),
        }))
    }

    async fn drop_audit_prefix(&mut self, through_seq: i64) -> Result<u64> {
        // PostgreSQL: the owner's guarded function (the application role may
        // not delete audit rows). SQLite: a trigger refuses the deletion of
        // any event no checkpoint covers.
        self.flush_audit().await?;
        if matches!(self.tx, Tx::Postgres(..)) {
            let q = self
                .q("SELECT karen_audit_drop_prefix($1, $2) AS removed")
                .bind(through_seq);
            let row = self.tx.fetch_one(q).await?;
            return Ok(u64::try_from(row.get::<i64>("removed")?).unwrap_or(0));
        }
        let checkpoint = self
            .q("SELECT 1 AS one FROM audit_checkpoints WHERE tenant_id = $1 AND seq = $2")
            .bind(through_seq);
        if self.tx.fetch_optional(checkpoint).await?.is_none() {
            return Err(Error::internal(
                "a prefix of the audit trail is removed only up to a signed checkpoint",
            ));
        }
        let q = self
            .q("DELETE FROM audit_events WHERE tenant_id = $1 AND seq <= $2")
            .bind(through_seq);
        self.tx.execute(q).await
    }
}
