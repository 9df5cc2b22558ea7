//! Long-term memories.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::memory::{DecayTier, Importance, Memory, MemoryKind, MemoryText, Provenance};
use karen_domain::ports::{MemoryRepo, MemoryScope};
use karen_domain::{ConversationId, Error, MemoryId, MessageId, Result, TenantId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::conn::Row;
use crate::content::{KeyRing, Slot};
use crate::rows;
use crate::tenant::{SqlTenantTx, by_ids};

fn stored(column: &str, error: Error) -> Error {
    Error::internal(format!("stored memory {column} is invalid: {error}"))
}

fn memory(row: &Row, keys: &KeyRing) -> Result<Memory> {
    let tenant_id = TenantId::from_uuid(row.get("tenant_id")?);
    let id: Uuid = row.get("id")?;
    let text = keys.open(
        Slot::new("memories", "content", id),
        &row.get::<Vec<u8>>("content")?,
    )?;
    let importance = u8::try_from(row.get::<i32>("importance")?).unwrap_or(Importance::MIN);
    let provenance = row
        .get::<Option<Uuid>>("source_conversation_id")?
        .map(|conversation| -> Result<Provenance> {
            Ok(Provenance {
                conversation_id: ConversationId::from_uuid(conversation),
                message_id: row
                    .get::<Option<Uuid>>("source_message_id")?
                    .map(MessageId::from_uuid),
            })
        })
        .transpose()?;
    Ok(Memory {
        id: MemoryId::from_uuid(id),
        tenant_id,
        owner: row
            .get::<Option<Uuid>>("owner_user_id")?
            .map(UserId::from_uuid),
        kind: MemoryKind::parse(&row.get::<String>("kind")?).map_err(|e| stored("kind", e))?,
        content: MemoryText::parse(&text).map_err(|e| stored("content", e))?,
        content_hash: row.get("content_hash")?,
        importance: Importance::new(importance).map_err(|e| stored("importance", e))?,
        tier: DecayTier::parse(&row.get::<String>("tier")?).map_err(|e| stored("tier", e))?,
        provenance,
        created_at: rows::time(row, "created_at")?,
        updated_at: rows::time(row, "updated_at")?,
        last_recalled_at: rows::opt_time(row, "last_recalled_at")?,
    })
}

#[async_trait]
impl MemoryRepo for SqlTenantTx {
    async fn insert_memory(&mut self, m: &Memory) -> Result<bool> {
        let keys = self.sealing_keys().await?;
        let sealed = keys.seal(
            Slot::new("memories", "content", m.id.as_uuid()),
            m.content.as_str(),
        )?;
        let q = self
            .q("INSERT INTO memories (tenant_id, id, owner_user_id, kind, content, content_hash, importance, \
                tier, source_conversation_id, source_message_id, created_at, updated_at, last_recalled_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                ON CONFLICT (tenant_id, content_hash) DO NOTHING")
            .bind(m.id.as_uuid())
            .bind(m.owner.map(|u| u.as_uuid()))
            .bind(m.kind.as_str())
            .bind(sealed)
            .bind(m.content_hash.clone())
            .bind(i32::from(m.importance.get()))
            .bind(m.tier.as_str())
            .bind(m.provenance.map(|p| p.conversation_id.as_uuid()))
            .bind(m.provenance.and_then(|p| p.message_id).map(|id| id.as_uuid()))
            .bind(to_millis(m.created_at))
            .bind(to_millis(m.updated_at))
            .bind(m.last_recalled_at.map(to_millis));
        Ok(self.tx.execute(q).await? == 1)
    }

    async fn memory(&mut self, id: MemoryId) -> Result<Option<Memory>> {
        let q = self
            .q("SELECT * FROM memories WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.fetch_optional_sealed(q, memory).await
    }

    async fn memories_by_ids(&mut self, ids: &[MemoryId]) -> Result<Vec<Memory>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        self.fetch_all_sealed_by_ids(by_ids!("memories"), &ids, memory)
            .await
    }

    async fn memory_by_hash(&mut self, content_hash: &str) -> Result<Option<Memory>> {
        let q = self
            .q("SELECT * FROM memories WHERE tenant_id = $1 AND content_hash = $2")
            .bind(content_hash.to_owned());
        self.fetch_optional_sealed(q, memory).await
    }

    async fn list_memories(
        &mut self,
        scope: MemoryScope,
        after: Option<MemoryId>,
        limit: i64,
    ) -> Result<Vec<Memory>> {
        let after = after.map(|id| id.as_uuid());
        let q = match scope {
            MemoryScope::Private(user) => self
                .q(
                    "SELECT * FROM memories WHERE tenant_id = $1 AND owner_user_id = $2 \
                    AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4",
                )
                .bind(user.as_uuid())
                .bind(after)
                .bind(limit),
            MemoryScope::VisibleTo(user) => self
                .q("SELECT * FROM memories WHERE tenant_id = $1 \
                    AND (owner_user_id IS NULL OR owner_user_id = $2) \
                    AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4")
                .bind(user.as_uuid())
                .bind(after)
                .bind(limit),
            MemoryScope::Shared => self
                .q(
                    "SELECT * FROM memories WHERE tenant_id = $1 AND owner_user_id IS NULL \
                    AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
                )
                .bind(after)
                .bind(limit),
            MemoryScope::All => self
                .q("SELECT * FROM memories WHERE tenant_id = $1 \
                    AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3")
                .bind(after)
                .bind(limit),
        };
        self.fetch_all_sealed(q, memory).await
    }

    async fn update_memory(&mut self, m: &Memory) -> Result<()> {
        let keys = self.sealing_keys().await?;
        let sealed = keys.seal(
            Slot::new("memories", "content", m.id.as_uuid()),
            m.content.as_str(),
        )?;
        let q = self
            .q("UPDATE memories SET kind = $3, content = $4, content_hash = $5, importance = $6, tier = $7, \
                updated_at = $8, last_recalled_at = $9 WHERE tenant_id = $1 AND id = $2")
            .bind(m.id.as_uuid())
            .bind(m.kind.as_str())
            .bind(sealed)
            .bind(m.content_hash.clone())
            .bind(i32::from(m.importance.get()))
            .bind(m.tier.as_str())
            .bind(to_millis(m.updated_at))
            .bind(m.last_recalled_at.map(to_millis));
        self.tx.execute(q).await.map(drop)
    }

    async fn delete_memory(&mut self, id: MemoryId) -> Result<bool> {
        let q = self
            .q("DELETE FROM memories WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn touch_memories(&mut self, ids: &[MemoryId], at: OffsetDateTime) -> Result<()> {
        for id in ids {
            let q = self
                .q("UPDATE memories SET last_recalled_at = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(id.as_uuid())
                .bind(to_millis(at));
            self.tx.execute(q).await?;
        }
        Ok(())
    }
}
