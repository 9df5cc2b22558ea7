//! Conversations and messages.

use async_trait::async_trait;
use karen_domain::chat::{Citation, Conversation, MessageStatus, StoredMessage};
use karen_domain::clock::to_millis;
use karen_domain::ports::{ActivityCursor, ChatRole, ConversationRepo, ToolCall};
use karen_domain::values::Label;
use karen_domain::{ConversationId, Error, MessageId, PersonaId, Result, TenantId, UserId};
use sqlx::types::Json;
use uuid::Uuid;

use crate::conn::Row;
use crate::content::{KeyRing, Slot};
use crate::rows;
use crate::tenant::SqlTenantTx;

fn conversation(row: &Row) -> Result<Conversation> {
    Ok(Conversation {
        id: ConversationId::from_uuid(row.get("id")?),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        user_id: UserId::from_uuid(row.get("user_id")?),
        title: row
            .get::<Option<String>>("title")?
            .map(|t| Label::parse(&t))
            .transpose()?,
        persona_id: row
            .get::<Option<Uuid>>("persona_id")?
            .map(PersonaId::from_uuid),
        created_at: rows::time(row, "created_at")?,
        updated_at: rows::time(row, "updated_at")?,
        last_activity_at: rows::time(row, "last_activity_at")?,
    })
}

fn role(text: &str) -> Result<ChatRole> {
    match text {
        "system" => Ok(ChatRole::System),
        "user" => Ok(ChatRole::User),
        "assistant" => Ok(ChatRole::Assistant),
        "tool" => Ok(ChatRole::Tool),
        other => Err(Error::internal(format!(
            "unknown message role '{other}' in store"
        ))),
    }
}

fn tokens(row: &Row, column: &str) -> Result<u32> {
    Ok(u32::try_from(row.get::<i32>(column)?).unwrap_or(0))
}

fn message(row: &Row, keys: &KeyRing) -> Result<StoredMessage> {
    let tenant_id = TenantId::from_uuid(row.get("tenant_id")?);
    let id: Uuid = row.get("id")?;
    Ok(StoredMessage {
        id: MessageId::from_uuid(id),
        tenant_id,
        conversation_id: ConversationId::from_uuid(row.get("conversation_id")?),
        role: role(&row.get::<String>("role")?)?,
        content: keys.open(
            Slot::new("messages", "content", id),
            &row.get::<Vec<u8>>("content")?,
        )?,
        tool_calls: row
            .get::<Option<Json<Vec<ToolCall>>>>("tool_calls")?
            .map(|j| j.0)
            .unwrap_or_default(),
        status: MessageStatus::parse(&row.get::<String>("status")?)?,
        model: row.get("model")?,
        provider: row.get("provider")?,
        prompt_tokens: tokens(row, "prompt_tokens")?,
        completion_tokens: tokens(row, "completion_tokens")?,
        citations: row
            .get::<Option<Json<Vec<Citation>>>>("citations")?
            .map(|j| j.0)
            .unwrap_or_default(),
        created_at: rows::time(row, "created_at")?,
    })
}

fn saturating_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[async_trait]
impl ConversationRepo for SqlTenantTx {
    async fn insert_conversation(&mut self, c: &Conversation) -> Result<()> {
        let q = self
            .q("INSERT INTO conversations (tenant_id, id, user_id, title, persona_id, created_at, updated_at, \
                last_activity_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(c.id.as_uuid())
            .bind(c.user_id.as_uuid())
            .bind(c.title.as_ref().map(|t| t.as_str().to_owned()))
            .bind(c.persona_id.map(|p| p.as_uuid()))
            .bind(to_millis(c.created_at))
            .bind(to_millis(c.updated_at))
            .bind(to_millis(c.last_activity_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn conversation(&mut self, id: ConversationId) -> Result<Option<Conversation>> {
        let q = self
            .q("SELECT * FROM conversations WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(conversation)
            .transpose()
    }

    async fn list_conversations(
        &mut self,
        user: UserId,
        after: Option<ActivityCursor>,
        limit: i64,
    ) -> Result<Vec<Conversation>> {
        let q = self
            .q(
                "SELECT * FROM conversations WHERE tenant_id = $1 AND user_id = $2 \
                AND ($3 IS NULL OR last_activity_at < $3 OR (last_activity_at = $3 AND id < $4)) \
                ORDER BY last_activity_at DESC, id DESC LIMIT $5",
            )
            .bind(user.as_uuid())
            .bind(after.map(|c| c.last_activity_ms))
            .bind(after.map(|c| c.id))
            .bind(limit);
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(conversation)
            .collect()
    }

    async fn update_conversation(&mut self, c: &Conversation) -> Result<()> {
        let q = self
            .q("UPDATE conversations SET title = $3, persona_id = $4, updated_at = $5, last_activity_at = $6 \
                WHERE tenant_id = $1 AND id = $2")
            .bind(c.id.as_uuid())
            .bind(c.title.as_ref().map(|t| t.as_str().to_owned()))
            .bind(c.persona_id.map(|p| p.as_uuid()))
            .bind(to_millis(c.updated_at))
            .bind(to_millis(c.last_activity_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn touch_conversation(
        &mut self,
        id: ConversationId,
        at: time::OffsetDateTime,
    ) -> Result<()> {
        let q = self
            .q("UPDATE conversations SET last_activity_at = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid())
            .bind(to_millis(at));
        self.tx.execute(q).await.map(drop)
    }

    async fn delete_conversation(&mut self, id: ConversationId) -> Result<bool> {
        // Messages go with it (ON DELETE CASCADE), within this tenant's rows.
        let q = self
            .q("DELETE FROM conversations WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn insert_message(&mut self, m: &StoredMessage) -> Result<()> {
        let keys = self.sealing_keys().await?;
        let sealed = keys.seal(Slot::new("messages", "content", m.id.as_uuid()), &m.content)?;
        let tool_calls = (!m.tool_calls.is_empty()).then(|| Json(m.tool_calls.clone()));
        let citations = (!m.citations.is_empty()).then(|| Json(m.citations.clone()));
        let q = self
            .q("INSERT INTO messages (tenant_id, id, conversation_id, role, content, tool_calls, status, model, \
                provider, prompt_tokens, completion_tokens, created_at, citations) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)")
            .bind(m.id.as_uuid())
            .bind(m.conversation_id.as_uuid())
            .bind(m.role.as_str())
            .bind(sealed)
            .bind(tool_calls)
            .bind(m.status.as_str())
            .bind(m.model.clone())
            .bind(m.provider.clone())
            .bind(saturating_i32(m.prompt_tokens))
            .bind(saturating_i32(m.completion_tokens))
            .bind(to_millis(m.created_at))
            .bind(citations);
        self.tx.execute(q).await.map(drop)
    }

    async fn list_messages(
        &mut self,
        conversation: ConversationId,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<StoredMessage>> {
        let q = self
            .q("SELECT * FROM messages WHERE tenant_id = $1 AND conversation_id = $2 AND ($3 IS NULL OR id > $3) \
                ORDER BY id LIMIT $4")
            .bind(conversation.as_uuid())
            .bind(after)
            .bind(limit);
        self.fetch_all_sealed(q, message).await
    }

    async fn recent_messages(
        &mut self,
        conversation: ConversationId,
        limit: i64,
    ) -> Result<Vec<StoredMessage>> {
        let q = self
            .q("SELECT * FROM messages WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY id DESC LIMIT $3")
            .bind(conversation.as_uuid())
            .bind(limit);
        let mut messages = self.fetch_all_sealed(q, message).await?;
        messages.reverse();
        Ok(messages)
    }
}
