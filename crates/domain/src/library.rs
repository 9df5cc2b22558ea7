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

/// Where a re-embedding job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingJobState {
    /// Recorded, not started (or put back after a passing failure).
    Pending,
    /// A worker holds its lease and is re-embedding.
    Running,
    /// Finished: the tenant's searches use its target model.
    Done,
    /// Given up after repeated failures; searches stay on the previous model.
    Failed,
    /// Superseded by a later change of the setting.
    Cancelled,
}

impl EmbeddingJobState {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> crate::Result<Self> {
        Ok(match text {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "done" => Self::Done,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => {
                return Err(crate::Error::internal(format!(
                    "unknown embedding job state '{other}' in store"
                )));
            }
        })
    }
}

/// A job moving a tenant's vectors from one embedding model to another.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingJob {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    /// The model searches use until the job is done.
    pub from_model: String,
    /// The model the job re-embeds everything with.
    pub to_model: String,
    pub state: EmbeddingJobState,
    /// Memories and chunks to re-embed (known once the job started).
    pub total: u64,
    /// Of those, how many are done.
    pub done: u64,
    /// The last entry handled, in key order: a resumed job continues after it.
    pub cursor: Option<crate::ports::EntryKey>,
    /// The new model's vector length, once known.
    pub dims: Option<u32>,
    /// Times a worker started on it.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

/// Progress saved after a batch of a running job.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingJobProgress {
    pub total: u64,
    pub done: u64,
    pub cursor: Option<crate::ports::EntryKey>,
    pub dims: Option<u32>,
}
