//! Data subject requests: everything Karen holds about one person, gathered
//! for export (GDPR articles 15 and 20).
//!
//! The export holds the user's profile, API keys (never their secrets), their
//! conversations with every message, their memories, the documents they
//! uploaded with their text, their usage records, the audit events they
//! caused (as themselves or through one of their API keys), and what an
//! identity provider set on them through SCIM with their SCIM groups. It is read in
//! one read transaction, so it is consistent, and recorded as `user.export`.
//! Erasure (article 17) is in [`erasure`].

use std::sync::Arc;

use karen_domain::audit::{AuditEvent, AuditFilter};
use karen_domain::chat::{Conversation, StoredMessage, UsageRecord};
use karen_domain::credentials::ApiKeyRecord;
use karen_domain::library::{Document, StoredChunk};
use karen_domain::memory::Memory;
use karen_domain::page::PageRequest;
use karen_domain::permission::Permission;
use karen_domain::ports::{ActivityCursor, MemoryScope, TenantTx, UsageFilter};
use karen_domain::scim::{ScimGroup, ScimUserRecord};
use karen_domain::user::User;
use karen_domain::{Error, Result, TenantContext, TenantScope, UserId};

use crate::Deps;
use crate::audit::Record;
use crate::memory::Indexer;

mod erasure;
pub use erasure::{ErasureReport, UploadedDocuments};

const BATCH: i64 = 200;

/// Everything Karen holds about one user.
#[derive(Debug, Clone)]
pub struct UserExport {
    pub user: User,
    pub api_keys: Vec<ApiKeyRecord>,
    /// Each conversation with its messages, oldest first.
    pub conversations: Vec<(Conversation, Vec<StoredMessage>)>,
    /// The user's private memories.
    pub memories: Vec<Memory>,
    /// Documents the user uploaded, each with its passages.
    pub documents: Vec<(Document, Vec<StoredChunk>)>,
    pub usage: Vec<UsageRecord>,
    /// Events the user caused, in sequence order.
    pub audit: Vec<AuditEvent>,
    /// What an identity provider set through SCIM, if it manages the user.
    pub provisioning: Option<ScimUserRecord>,
    /// The SCIM groups the user belongs to.
    pub groups: Vec<ScimGroup>,
    /// The user's identities at single sign-on providers.
    pub sso_identities: Vec<karen_domain::sso::SsoIdentity>,
}

/// Data subject requests.
#[derive(Clone)]
pub struct PrivacyService {
    deps: Arc<Deps>,
    indexer: Indexer,
}

async fn all_audit(tx: &mut dyn TenantTx, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
    let mut events = Vec::new();
    loop {
        let after = events.last().map_or(0, |e: &AuditEvent| e.seq);
        let batch = tx.audit().list_audit(filter, after, 1000).await?;
        let done = batch.len() < 1000;
        events.extend(batch);
        if done {
            return Ok(events);
        }
    }
}

impl PrivacyService {
    pub(crate) fn new(deps: Arc<Deps>, indexer: Indexer) -> Self {
        Self { deps, indexer }
    }

    /// Everything about `user`: for the user themself, or for a holder of
    /// `users:manage`. Another tenant's user is `not_found`.
    pub async fn export_user(&self, ctx: &TenantContext, user: UserId) -> Result<UserExport> {
        if ctx.principal().user_id != user {
            ctx.require(Permission::UsersManage)?;
        }
        self.export(ctx.scope(), user).await
    }

    /// Everything about `user`, read under `scope` (the operator's CLI uses
    /// a system scope); recorded as `user.export` by the scope's actor.
    pub async fn export(&self, scope: TenantScope, user: UserId) -> Result<UserExport> {
        let mut tx = self.deps.store.tenant_read(scope).await?;
        let profile = tx
            .users()
            .user_by_id(user)
            .await?
            .ok_or(Error::NotFound("user"))?;

        let mut api_keys = Vec::new();
        let mut page = PageRequest {
            after: None,
            limit: BATCH as u32,
        };
        loop {
            let batch = tx.api_keys().list_api_keys(Some(user), &page).await?;
            let more = batch.len() > BATCH as usize;
            api_keys.extend(batch.into_iter().take(BATCH as usize));
            match (more, api_keys.last()) {
                (true, Some(last)) => page.after = Some(last.id.as_uuid()),
                _ => break,
            }
        }

        let mut conversations = Vec::new();
        let mut cursor = None;
        loop {
            let batch = tx
                .conversations()
                .list_conversations(user, cursor, BATCH)
                .await?;
            let done = batch.len() < BATCH as usize;
            cursor = batch.last().map(|c| ActivityCursor {
                last_activity_ms: karen_domain::clock::to_millis(c.last_activity_at),
                id: c.id.as_uuid(),
            });
            for conversation in batch {
                let mut messages = Vec::new();
                loop {
                    let after = messages.last().map(|m: &StoredMessage| m.id.as_uuid());
                    let page = tx
                        .conversations()
                        .list_messages(conversation.id, after, BATCH)
                        .await?;
                    let last_page = page.len() < BATCH as usize;
                    messages.extend(page);
                    if last_page {
                        break;
                    }
                }
                conversations.push((conversation, messages));
            }
            if done {
                break;
            }
        }

        let mut memories = Vec::new();
        loop {
            let after = memories.last().map(|m: &Memory| m.id);
            let batch = tx
                .memories()
                .list_memories(MemoryScope::Private(user), after, BATCH)
                .await?;
            let done = batch.len() < BATCH as usize;
            memories.extend(batch);
            if done {
                break;
            }
        }

        let mut documents = Vec::new();
        let mut after = None;
        loop {
            let batch = tx.documents().list_documents(after, BATCH).await?;
            let done = batch.len() < BATCH as usize;
            after = batch.last().map(|d| d.id);
            for document in batch {
                if document.uploaded_by == Some(user) {
                    let chunks = tx.documents().chunks_of(document.id).await?;
                    documents.push((document, chunks));
                }
            }
            if done {
                break;
            }
        }

        let mut usage = Vec::new();
        let filter = UsageFilter {
            user: Some(user),
            ..UsageFilter::default()
        };
        loop {
            let after = usage.last().map(|u: &UsageRecord| u.id.as_uuid());
            let batch = tx.usage().list_usage(&filter, after, BATCH).await?;
            let done = batch.len() < BATCH as usize;
            usage.extend(batch);
            if done {
                break;
            }
        }

        let mut audit = all_audit(
            &mut *tx,
            &AuditFilter {
                actor_kind: Some("user"),
                actor_id: Some(user.to_string()),
                ..AuditFilter::default()
            },
        )
        .await?;
        for key in &api_keys {
            let by_key = AuditFilter {
                actor_kind: Some("api_key"),
                actor_id: Some(key.id.to_string()),
                ..AuditFilter::default()
            };
            audit.extend(all_audit(&mut *tx, &by_key).await?);
        }
        audit.sort_by_key(|e| e.seq);
        let provisioning = tx.scim().scim_user(user).await?;
        let groups = tx.scim().groups_of_user(user).await?;
        let sso_identities = tx.sso().identities_of(user).await?;
        tx.commit().await?;

        self.deps
            .audit
            .record_alone(
                scope,
                scope.actor(),
                Record::new("user.export").target("user", user),
            )
            .await?;
        Ok(UserExport {
            user: profile,
            api_keys,
            conversations,
            memories,
            documents,
            usage,
            audit,
            provisioning,
            groups,
            sso_identities,
        })
    }
}
