//! Conversations: each belongs to one user of the tenant; nobody else (not
//! even an admin) reads it through this API.

use crate::audit::Record;
use std::sync::Arc;

use karen_domain::chat::{Conversation, StoredMessage};
use karen_domain::clock::to_millis;
use karen_domain::page::{Page, PageRequest};
use karen_domain::permission::Permission;
use karen_domain::ports::{ActivityCursor, TenantTx};
use karen_domain::values::Label;
use karen_domain::{ConversationId, Error, PersonaId, Result, TenantContext};
use uuid::Uuid;

use crate::Deps;

/// One page of conversations, most recently active first.
pub struct ConversationPage {
    pub items: Vec<Conversation>,
    /// Pass as `after` for the next page.
    pub next_cursor: Option<String>,
}

/// Changes to a conversation; absent fields stay.
#[derive(Default)]
pub struct ConversationChanges {
    /// `Some(None)` clears the title.
    pub title: Option<Option<String>>,
    /// `Some(None)` detaches the persona.
    pub persona: Option<Option<PersonaId>>,
}

/// The conversation service.
#[derive(Clone)]
pub struct ConversationService {
    deps: Arc<Deps>,
}

fn parse_cursor(text: &str) -> Result<ActivityCursor> {
    let bad = || {
        Error::invalid(
            Some("after"),
            "after must be the next_cursor of a previous page",
        )
    };
    let (millis, id) = text.split_once('_').ok_or_else(bad)?;
    Ok(ActivityCursor {
        last_activity_ms: millis.parse().map_err(|_| bad())?,
        id: Uuid::try_parse(id).map_err(|_| bad())?,
    })
}

fn cursor_of(c: &Conversation) -> String {
    format!("{}_{}", to_millis(c.last_activity_at), c.id)
}

/// Loads a conversation of the principal's own, or `not_found` (also for
/// another user's conversation in the same tenant).
pub(crate) async fn own_conversation(
    tx: &mut dyn TenantTx,
    ctx: &TenantContext,
    id: ConversationId,
) -> Result<Conversation> {
    let conversation = tx
        .conversations()
        .conversation(id)
        .await?
        .ok_or(Error::NotFound("conversation"))?;
    if conversation.user_id != ctx.principal().user_id {
        return Err(Error::NotFound("conversation"));
    }
    Ok(conversation)
}

/// Checks that a persona exists and is visible to the principal.
pub(crate) async fn visible_persona(
    tx: &mut dyn TenantTx,
    ctx: &TenantContext,
    id: PersonaId,
) -> Result<()> {
    let persona = tx.personas().persona(id).await?;
    match persona {
        Some(p) if p.owner.is_none() || p.owner == Some(ctx.principal().user_id) => Ok(()),
        _ => Err(Error::invalid(
            Some("persona_id"),
            "there is no such persona",
        )),
    }
}

impl ConversationService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Starts a conversation.
    pub async fn create(
        &self,
        ctx: &TenantContext,
        title: Option<String>,
        persona: Option<PersonaId>,
    ) -> Result<Conversation> {
        ctx.require(Permission::ChatWrite)?;
        let title = title.as_deref().map(Label::parse).transpose()?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        if let Some(persona) = persona {
            visible_persona(&mut *tx, ctx, persona).await?;
        }
        let now = self.deps.clock.now();
        let conversation = Conversation {
            id: ConversationId::generate(),
            tenant_id: ctx.tenant_id(),
            user_id: ctx.principal().user_id,
            title,
            persona_id: persona,
            created_at: now,
            updated_at: now,
            last_activity_at: now,
        };
        tx.conversations()
            .insert_conversation(&conversation)
            .await?;
        let audit = Record::new("conversation.create").target("conversation", conversation.id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        Ok(conversation)
    }

    /// The principal's conversations, most recently active first.
    pub async fn list(
        &self,
        ctx: &TenantContext,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ConversationPage> {
        ctx.require(Permission::ChatRead)?;
        let page = PageRequest::parse(None, limit)?;
        let after = after
            .filter(|a| !a.is_empty())
            .map(parse_cursor)
            .transpose()?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let mut items = tx
            .conversations()
            .list_conversations(ctx.principal().user_id, after, page.fetch_limit())
            .await?;
        tx.commit().await?;
        self.deps
            .audit_read(ctx.scope(), Record::new("conversation.list"))
            .await?;
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(cursor_of)
        } else {
            None
        };
        Ok(ConversationPage { items, next_cursor })
    }

    /// One of the principal's conversations.
    pub async fn get(&self, ctx: &TenantContext, id: ConversationId) -> Result<Conversation> {
        ctx.require(Permission::ChatRead)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let conversation = own_conversation(&mut *tx, ctx, id).await?;
        tx.commit().await?;
        let read = Record::new("conversation.read").target("conversation", id);
        self.deps.audit_read(ctx.scope(), read).await?;
        Ok(conversation)
    }

    /// Renames a conversation or changes its persona.
    pub async fn update(
        &self,
        ctx: &TenantContext,
        id: ConversationId,
        changes: ConversationChanges,
    ) -> Result<Conversation> {
        ctx.require(Permission::ChatWrite)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let mut conversation = own_conversation(&mut *tx, ctx, id).await?;
        if let Some(title) = changes.title {
            conversation.title = title.as_deref().map(Label::parse).transpose()?;
        }
        if let Some(persona) = changes.persona {
            if let Some(persona) = persona {
                visible_persona(&mut *tx, ctx, persona).await?;
            }
            conversation.persona_id = persona;
        }
        conversation.updated_at = self.deps.clock.now();
        tx.conversations()
            .update_conversation(&conversation)
            .await?;
        let audit = Record::new("conversation.update").target("conversation", id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        Ok(conversation)
    }

    /// Deletes a conversation and all its messages.
    pub async fn delete(&self, ctx: &TenantContext, id: ConversationId) -> Result<()> {
        ctx.require(Permission::ChatWrite)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        own_conversation(&mut *tx, ctx, id).await?;
        tx.conversations().delete_conversation(id).await?;
        let audit = Record::new("conversation.delete").target("conversation", id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await
    }

    /// A conversation's messages, oldest first.
    pub async fn messages(
        &self,
        ctx: &TenantContext,
        id: ConversationId,
        page: &PageRequest,
    ) -> Result<Page<StoredMessage>> {
        ctx.require(Permission::ChatRead)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        own_conversation(&mut *tx, ctx, id).await?;
        let rows = tx
            .conversations()
            .list_messages(id, page.after, page.fetch_limit())
            .await?;
        tx.commit().await?;
        let read = Record::new("message.list").target("conversation", id);
        self.deps.audit_read(ctx.scope(), read).await?;
        Ok(Page::from_rows(rows, page, |m| m.id.as_uuid()))
    }
}
