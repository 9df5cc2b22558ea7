//! Search indexes over a tenant's memories and document chunks: vectors
//! (semantic similarity) and full text (BM25). Both are derived from the SQL
//! store, the source of truth, and can be rebuilt from it at any time.
//!
//! Every call names the tenant; an implementation keeps each tenant's entries
//! apart (its own files, partition or rows) and never answers one tenant with
//! another's entries. Access filters are typed values (ids, validated role
//! names), never text a user wrote.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Result, RoleName, TenantId, UserId};

/// What an index entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A long-term memory.
    Memory,
    /// A passage (chunk) of a document.
    Chunk,
}

impl EntryKind {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryKind::Memory => "memory",
            EntryKind::Chunk => "chunk",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "memory" => Ok(EntryKind::Memory),
            "chunk" => Ok(EntryKind::Chunk),
            other => Err(Error::Internal(format!(
                "unknown index entry kind '{other}'"
            ))),
        }
    }
}

/// The key of an entry: a memory id or a chunk id, unique within a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryKey {
    pub kind: EntryKind,
    pub id: Uuid,
}

impl EntryKey {
    pub const fn new(kind: EntryKind, id: Uuid) -> Self {
        Self { kind, id }
    }
}

impl EntryKey {
    /// Parses the [`Display`](fmt::Display) form, `kind:uuid`.
    pub fn parse(text: &str) -> Result<Self> {
        let (kind, id) = text
            .split_once(':')
            .ok_or_else(|| Error::Internal(format!("malformed index entry key '{text}'")))?;
        let id = Uuid::try_parse(id)
            .map_err(|_| Error::Internal(format!("malformed index entry key '{text}'")))?;
        Ok(Self::new(EntryKind::parse(kind)?, id))
    }
}

impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}

/// Who may see an entry. Stored with the entry and applied by the index, so
/// that a search never returns what the searcher may not see.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EntryAccess {
    /// A private entry (a user's own memory): only this user sees it.
    /// `None`: the whole tenant (subject to `roles`).
    pub owner: Option<UserId>,
    /// A restricted document's chunk: only users holding one of these roles
    /// see it. Empty: not restricted.
    pub roles: Vec<RoleName>,
    /// The document a chunk belongs to.
    pub document: Option<Uuid>,
}

/// Who is searching, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchFilter {
    /// The kinds wanted; empty means every kind.
    pub kinds: Vec<EntryKind>,
    /// The searcher: sees entries without an owner, and their own.
    pub user: UserId,
    /// The searcher's roles: sees unrestricted entries and those restricted
    /// to one of these roles.
    pub roles: Vec<RoleName>,
}

impl SearchFilter {
    /// Whether an entry of `kind` with `access` is visible under this filter.
    /// Implementations that cannot push the filter down use this after the fact.
    pub fn admits(&self, kind: EntryKind, access: &EntryAccess) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && access.owner.is_none_or(|owner| owner == self.user)
            && (access.roles.is_empty() || access.roles.iter().any(|r| self.roles.contains(r)))
    }
}

/// One search result; a higher score is a better match. Vector indexes score
/// by cosine similarity (-1 to 1), text indexes by BM25 (0 and up): scores of
/// the two kinds are not comparable, ranks are.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub key: EntryKey,
    pub score: f32,
}

/// The embedding model whose vectors an index holds. A tenant's entries of
/// one space are never compared with those of another (a different model or
/// dimension): a search names its space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VectorSpace {
    /// The embedding model id (e.g. `karen-offline-hash-384`).
    pub model: String,
    /// The vectors' length.
    pub dims: u32,
}

/// An entry of a vector index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorEntry {
    pub key: EntryKey,
    pub access: EntryAccess,
    /// Of length `space.dims`; implementations refuse any other length.
    pub vector: Vec<f32>,
}

/// The state of one tenant's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStatus {
    /// Entries held.
    pub entries: u64,
    /// The index was missing or found damaged (and reset): the caller should
    /// rebuild it from the SQL store.
    pub rebuild_needed: bool,
}

/// Nearest-neighbour search over embedding vectors.
#[async_trait]
pub trait VectorIndex: Send + Sync + 'static {
    /// A name for logs and metrics (`embedded`, `milvus`).
    fn name(&self) -> &str;
    /// Adds entries, replacing any with the same key in this space.
    async fn upsert(
        &self,
        tenant: TenantId,
        space: &VectorSpace,
        entries: Vec<VectorEntry>,
    ) -> Result<()>;
    /// Removes entries from every space of the tenant; unknown keys are ignored.
    async fn remove(&self, tenant: TenantId, keys: &[EntryKey]) -> Result<()>;
    /// Rewrites what the index keeps of the tenant so that removed entries
    /// leave nothing behind in its own files or logs (after an erasure).
    async fn compact(&self, tenant: TenantId) -> Result<()>;
    /// The entries nearest to `query` that `filter` admits, best first, at most `limit`.
    async fn search(
        &self,
        tenant: TenantId,
        space: &VectorSpace,
        query: &[f32],
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>>;
    /// Every key held for the tenant in this space (for drift checks).
    async fn keys(&self, tenant: TenantId, space: &VectorSpace) -> Result<Vec<EntryKey>>;
    /// The spaces the tenant has entries in.
    async fn spaces(&self, tenant: TenantId) -> Result<Vec<VectorSpace>>;
    /// The state of the tenant's index for a space.
    async fn status(&self, tenant: TenantId, space: &VectorSpace) -> Result<IndexStatus>;
    /// Drops a whole space of the tenant (after a move to another model).
    async fn drop_space(&self, tenant: TenantId, space: &VectorSpace) -> Result<()>;
    /// Removes everything the index holds for the tenant.
    async fn purge_tenant(&self, tenant: TenantId) -> Result<()>;
}

/// An entry of a full-text index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextEntry {
    pub key: EntryKey,
    pub access: EntryAccess,
    pub text: String,
}

/// Full-text (BM25) search.
#[async_trait]
pub trait TextIndex: Send + Sync + 'static {
    /// A name for logs and metrics (`embedded`, `postgres`).
    fn name(&self) -> &str;
    /// Adds entries, replacing any with the same key.
    async fn upsert(&self, tenant: TenantId, entries: Vec<TextEntry>) -> Result<()>;
    /// Removes entries; unknown keys are ignored.
    async fn remove(&self, tenant: TenantId, keys: &[EntryKey]) -> Result<()>;
    /// Rewrites what the index keeps of the tenant so that removed entries
    /// leave nothing behind in its own files (after an erasure).
    async fn compact(&self, tenant: TenantId) -> Result<()>;
    /// The entries matching the words of `query` (plain text a user typed:
    /// never interpreted as query syntax) that `filter` admits, best first.
    async fn search(
        &self,
        tenant: TenantId,
        query: &str,
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>>;
    /// Every key held for the tenant (for drift checks).
    async fn keys(&self, tenant: TenantId) -> Result<Vec<EntryKey>>;
    /// The state of the tenant's index.
    async fn status(&self, tenant: TenantId) -> Result<IndexStatus>;
    /// Records that the caller rebuilt the tenant's index from the SQL store,
    /// so `status` stops reporting `rebuild_needed`. Indexes that never need
    /// a rebuild (rows under the store's own transactions) do nothing.
    async fn mark_rebuilt(&self, _tenant: TenantId) -> Result<()> {
        Ok(())
    }
    /// Removes everything the index holds for the tenant.
    async fn purge_tenant(&self, tenant: TenantId) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_parse_their_display_form() {
        let key = EntryKey::new(EntryKind::Chunk, Uuid::now_v7());
        assert_eq!(EntryKey::parse(&key.to_string()).ok(), Some(key));
        assert!(EntryKey::parse("chunk").is_err());
        assert!(EntryKey::parse("note:00000000-0000-0000-0000-000000000000").is_err());
        assert!(EntryKey::parse("memory:not-a-uuid").is_err());
    }
}
