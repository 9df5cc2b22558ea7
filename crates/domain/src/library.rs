//! A tenant's document library as stored: documents, their chunks, and the
//! embedding cache. The SQL store holds these; the search indexes are derived
//! from them.

use time::OffsetDateTime;

use crate::documents::DocumentFormat;
use crate::values::{Label, RoleName};
use crate::{ChunkId, DocumentId, TenantId, UserId};

/// An uploaded document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: DocumentId,
    pub tenant_id: TenantId,
    pub uploaded_by: Option<UserId>,
    pub title: Label,
    pub file_name: Option<String>,
    pub format: DocumentFormat,
    pub size_bytes: u64,
    /// Hex SHA-256 of the uploaded bytes.
    pub sha256: String,
    /// Empty: every member of the tenant may read it; otherwise only users
    /// holding one of these roles.
    pub access_roles: Vec<RoleName>,
    pub chunk_count: u32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Document {
    /// Whether a user holding `roles` may read this document.
    pub fn readable_with(&self, roles: &[RoleName]) -> bool {
        self.access_roles.is_empty() || self.access_roles.iter().any(|r| roles.contains(r))
    }
}

/// A passage of a document, as stored and indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub id: ChunkId,
    pub tenant_id: TenantId,
    pub document_id: DocumentId,
    /// Position in the document, from 0.
    pub ordinal: u32,
    /// The heading path the passage is under.
    pub heading: Option<String>,
    pub text: String,
    /// Hex SHA-256 of the text (the embedding cache key).
    pub content_hash: String,
}
