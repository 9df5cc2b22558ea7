//! Memories: what Karen remembers about a user (private, theirs alone) or a
//! tenant (shared, managed with `tenant:manage`). Exact duplicates (same
//! owner, same text ignoring case and spacing) are one memory.

use crate::audit::Record;
use std::sync::Arc;

use karen_domain::memory::{
    DecayTier, Importance, Memory, MemoryDraft, MemoryKind, MemoryText, Provenance,
};
use karen_domain::page::PageRequest;
use karen_domain::permission::Permission;
use karen_domain::ports::{EntryAccess, EntryKey, EntryKind, MemoryScope, TenantTx};
use karen_domain::{Error, MemoryId, Result, TenantContext, UserId};

use super::indexer::{IndexItem, Indexer};
use super::retrieval::{RecalledMemory, Retriever};
use super::sha256_hex;
use crate::Deps;

/// A memory to create or change (absent fields keep their value on change).
#[derive(Debug, Clone, Default)]
pub struct MemoryInput {
    pub content: Option<String>,
    pub kind: Option<String>,
    pub importance: Option<u8>,
    pub tier: Option<String>,
    /// Shared by the tenant (needs `tenant:manage`) rather than the caller's own.
    pub shared: bool,
}

/// Which memories a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryListScope {
    /// The caller's own and the shared ones.
    #[default]
    Visible,
    /// The caller's own.
    Private,
    /// The shared ones.
    Shared,
}

impl MemoryListScope {
    /// Parses the `scope` query parameter.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "all" | "visible" => Ok(Self::Visible),
            "private" | "mine" => Ok(Self::Private),
            "shared" => Ok(Self::Shared),
            other => Err(Error::invalid(
                Some("scope"),
                format!(
                    "'{}' is not a memory scope; use all, private or shared",
                    karen_domain::values::printable(other, 40)
                ),
            )),
        }
    }
}

/// The memory service.
#[derive(Clone)]
pub struct MemoryService {
    deps: Arc<Deps>,
    indexer: Indexer,
    retriever: Retriever,
}

/// The dedupe hash: owner and case-folded text.
fn content_hash(owner: Option<UserId>, content: &MemoryText) -> String {
    let owner = owner
        .map(|u| u.to_string())
        .unwrap_or_else(|| "shared".into());
    sha256_hex(&[owner.as_bytes(), content.dedupe_text().as_bytes()])
}

pub(super) fn index_item(memory: &Memory) -> IndexItem {
    IndexItem {
        key: EntryKey::new(EntryKind::Memory, memory.id.as_uuid()),
        access: EntryAccess {
            owner: memory.owner,
            roles: Vec::new(),
            document: None,
        },
        text: memory.content.as_str().to_owned(),
        content_hash: sha256_hex(&[memory.content.as_str().as_bytes()]),
    }
}

/// Longer-lived of two tiers.
fn longer(a: DecayTier, b: DecayTier) -> DecayTier {
    let order = |t: DecayTier| DecayTier::ALL.iter().position(|x| *x == t).unwrap_or(0);
    if order(a) >= order(b) { a } else { b }
}

impl MemoryService {
    pub(crate) fn new(deps: Arc<Deps>, indexer: Indexer, retriever: Retriever) -> Self {
        Self {
            deps,
            indexer,
            retriever,
        }
    }

    /// Who may change `memory`: its owner (with `memory:write`), or for a
    /// shared one an admin (with `tenant:manage` too). Someone else's private
    /// memory does not exist for the caller.
    fn check_write(ctx: &TenantContext, memory: &Memory) -> Result<()> {
        match memory.owner {
            Some(owner) if owner != ctx.principal().user_id => Err(Error::NotFound("memory")),
            Some(_) => ctx.require(Permission::MemoryWrite),
            None => {
                ctx.require(Permission::MemoryWrite)?;
                ctx.require(Permission::TenantManage)
            }
        }
    }

    fn visible(ctx: &TenantContext, memory: &Memory) -> bool {
        memory
            .owner
            .is_none_or(|owner| owner == ctx.principal().user_id)
    }

    /// Stores a draft (or merges it into its exact duplicate) and indexes it
    /// within `tx`. Returns the memory and whether it is new.
    async fn commit_draft(
        &self,
        tx: &mut dyn TenantTx,
        ctx: &TenantContext,
        owner: Option<UserId>,
        draft: MemoryDraft,
        provenance: Option<Provenance>,
    ) -> Result<(Memory, bool)> {
        let (memory, new) = self.store_draft(tx, ctx, owner, draft, provenance).await?;
        if new {
            self.indexer
                .index(tx, ctx.tenant_id(), vec![index_item(&memory)])
                .await?;
        }
        Ok((memory, new))
    }

    /// Stores a draft (or merges it into its exact duplicate) within `tx`,
    /// leaving the indexing of a new memory to the caller. Returns the memory
    /// and whether it is new.
    async fn store_draft(
        &self,
        tx: &mut dyn TenantTx,
        ctx: &TenantContext,
        owner: Option<UserId>,
        draft: MemoryDraft,
        provenance: Option<Provenance>,
    ) -> Result<(Memory, bool)> {
        let now = self.deps.clock.now();
        let hash = content_hash(owner, &draft.content);
        if let Some(mut existing) = tx.memories().memory_by_hash(&hash).await? {
            // A repeat confirms the memory: keep the stronger settings.
            existing.importance = existing.importance.max(draft.importance);
            existing.tier = longer(existing.tier, draft.tier);
            existing.updated_at = now;
            tx.memories().update_memory(&existing).await?;
            return Ok((existing, false));
        }
        let memory = Memory {
            id: MemoryId::generate(),
            tenant_id: ctx.tenant_id(),
            owner,
            kind: draft.kind,
            content: draft.content,
            content_hash: hash,
            importance: draft.importance,
            tier: draft.tier,
            provenance,
            created_at: now,
            updated_at: now,
            last_recalled_at: None,
        };
        if !tx.memories().insert_memory(&memory).await? {
            return Err(Error::Conflict(
                "the same memory was just stored; retry to merge".into(),
            ));
        }
        Ok((memory, true))
    }

    /// Remembers something; an exact duplicate is merged into the existing
    /// memory (`false`: nothing new was created).
    pub async fn create(&self, ctx: &TenantContext, input: MemoryInput) -> Result<(Memory, bool)> {
        ctx.require(Permission::MemoryWrite)?;
        if input.shared {
            ctx.require(Permission::TenantManage)?;
        }
        let content = input
            .content
            .as_deref()
            .ok_or_else(|| Error::invalid(Some("content"), "content is required"))?;
        let draft = MemoryDraft {
            content: MemoryText::parse(content)?,
            kind: input
                .kind
                .as_deref()
                .map(MemoryKind::parse)
                .transpose()?
                .unwrap_or(MemoryKind::Fact),
            importance: Importance::new(input.importance.unwrap_or(5))?,
            tier: input
                .tier
                .as_deref()
                .map(DecayTier::parse)
                .transpose()?
                .unwrap_or(DecayTier::Long),
        };
        let owner = (!input.shared).then_some(ctx.principal().user_id);
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let result = self
            .commit_draft(tx.as_mut(), ctx, owner, draft, None)
            .await?;
        let audit = Record::new("memory.create").target("memory", result.0.id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        Ok(result)
    }

    /// Stores what extraction found in a user's message (private memories).
    pub async fn remember_drafts(
        &self,
        ctx: &TenantContext,
        drafts: Vec<MemoryDraft>,
        provenance: Option<Provenance>,
    ) -> Result<Vec<Memory>> {
        if drafts.is_empty() || ctx.require(Permission::MemoryWrite).is_err() {
            return Ok(Vec::new());
        }
        let owner = Some(ctx.principal().user_id);
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let mut stored = Vec::new();
        let mut new = Vec::new();
        for draft in drafts {
            let (memory, created) = self
                .store_draft(tx.as_mut(), ctx, owner, draft, provenance)
                .await?;
            if created {
                new.push(index_item(&memory));
            }
            stored.push(memory);
        }
        // One index write for the batch: each write commits (and syncs) the
        // tenant's text index and appends to its vector index.
        if !new.is_empty() {
            self.indexer
                .index(tx.as_mut(), ctx.tenant_id(), new)
                .await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// A page of memories the caller may see, in id order.
    pub async fn list(
        &self,
        ctx: &TenantContext,
        scope: MemoryListScope,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(Vec<Memory>, Option<MemoryId>)> {
        ctx.require(Permission::MemoryRead)?;
        let page = PageRequest::parse(after, limit)?;
        let user = ctx.principal().user_id;
        let scope = match scope {
            MemoryListScope::Visible => MemoryScope::VisibleTo(user),
            MemoryListScope::Private => MemoryScope::Private(user),
            MemoryListScope::Shared => MemoryScope::Shared,
        };
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let mut memories = tx
            .memories()
            .list_memories(
                scope,
                page.after.map(MemoryId::from_uuid),
                page.fetch_limit(),
            )
            .await?;
        tx.commit().await?;
        self.deps
            .audit_read(ctx.scope(), Record::new("memory.list"))
            .await?;
        let next = if memories.len() > page.limit as usize {
            memories.truncate(page.limit as usize);
            memories.last().map(|m| m.id)
        } else {
            None
        };
        Ok((memories, next))
    }

    /// One memory the caller may see.
    pub async fn get(&self, ctx: &TenantContext, id: MemoryId) -> Result<Memory> {
        ctx.require(Permission::MemoryRead)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let memory = tx.memories().memory(id).await?;
        tx.commit().await?;
        let memory = memory
            .filter(|m| Self::visible(ctx, m))
            .ok_or(Error::NotFound("memory"))?;
        let read = Record::new("memory.read").target("memory", id);
        self.deps.audit_read(ctx.scope(), read).await?;
        Ok(memory)
    }

    /// Changes a memory (re-indexed when its text changes).
    pub async fn update(
        &self,
        ctx: &TenantContext,
        id: MemoryId,
        input: MemoryInput,
    ) -> Result<Memory> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let mut memory = tx
            .memories()
            .memory(id)
            .await?
            .ok_or(Error::NotFound("memory"))?;
        Self::check_write(ctx, &memory)?;
        let mut reindex = false;
        if let Some(content) = input.content.as_deref() {
            let content = MemoryText::parse(content)?;
            if content != memory.content {
                let hash = content_hash(memory.owner, &content);
                if tx
                    .memories()
                    .memory_by_hash(&hash)
                    .await?
                    .is_some_and(|other| other.id != memory.id)
                {
                    return Err(Error::Conflict(
                        "another memory already says exactly this; delete one of them".into(),
                    ));
                }
                memory.content = content;
                memory.content_hash = hash;
                reindex = true;
            }
        }
        if let Some(kind) = input.kind.as_deref() {
            memory.kind = MemoryKind::parse(kind)?;
        }
        if let Some(importance) = input.importance {
            memory.importance = Importance::new(importance)?;
        }
        if let Some(tier) = input.tier.as_deref() {
            memory.tier = DecayTier::parse(tier)?;
        }
        memory.updated_at = self.deps.clock.now();
        tx.memories().update_memory(&memory).await?;
        if reindex {
            self.indexer
                .index(tx.as_mut(), ctx.tenant_id(), vec![index_item(&memory)])
                .await?;
        }
        let audit = Record::new("memory.update").target("memory", id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        Ok(memory)
    }

    /// Forgets a memory: removed from the store and from every index.
    pub async fn delete(&self, ctx: &TenantContext, id: MemoryId) -> Result<()> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let memory = tx
            .memories()
            .memory(id)
            .await?
            .ok_or(Error::NotFound("memory"))?;
        Self::check_write(ctx, &memory)?;
        tx.memories().delete_memory(id).await?;
        self.indexer
            .remove(
                ctx.tenant_id(),
                &[EntryKey::new(EntryKind::Memory, id.as_uuid())],
            )
            .await?;
        let audit = Record::new("memory.delete").target("memory", id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await
    }

    /// Forgets everything Karen remembers about the caller (their private
    /// memories); returns how many.
    pub async fn forget_me(&self, ctx: &TenantContext) -> Result<u64> {
        ctx.require(Permission::MemoryWrite)?;
        let user = ctx.principal().user_id;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let mut removed = 0;
        loop {
            let batch = tx
                .memories()
                .list_memories(MemoryScope::Private(user), None, 200)
                .await?;
            if batch.is_empty() {
                break;
            }
            let keys: Vec<EntryKey> = batch
                .iter()
                .map(|m| EntryKey::new(EntryKind::Memory, m.id.as_uuid()))
                .collect();
            for memory in &batch {
                tx.memories().delete_memory(memory.id).await?;
            }
            self.indexer.remove(ctx.tenant_id(), &keys).await?;
            removed += batch.len() as u64;
        }
        let audit = Record::new("memory.forget_me")
            .target("user", user)
            .after(&serde_json::json!({ "removed": removed }));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// The caller's memories (own and shared) that match `query`, best first.
    pub async fn search(
        &self,
        ctx: &TenantContext,
        query: &str,
        limit: usize,
    ) -> Result<Vec<RecalledMemory>> {
        ctx.require(Permission::MemoryRead)?;
        let recall = self
            .retriever
            .search(ctx, query, vec![EntryKind::Memory], limit, 0, None)
            .await?;
        let found = serde_json::json!({ "memories": recall.memories.len() });
        self.deps
            .audit_read(ctx.scope(), Record::new("memory.search").after(&found))
            .await?;
        Ok(recall.memories)
    }
}
