//! Vector indexes behind [`karen_domain::ports::VectorIndex`]:
//!
//! - [`EmbeddedVectorIndex`] (embedded mode, the default): one HNSW index per
//!   tenant and vector space, in the tenant's own directory, crash-safe
//!   (checksummed write-ahead log plus atomically replaced snapshots).
//! - `MilvusVectorIndex` (scale-out, cargo feature `milvus`, on by default):
//!   one Milvus collection per vector space, the tenant as partition key.
//!
//! Both normalise vectors to unit length and score by cosine similarity, refuse
//! vectors whose length is not the space's, and apply the [`SearchFilter`]
//! inside the index so that a search returns up to `limit` admitted entries.
//!
//! [`SearchFilter`]: karen_domain::ports::SearchFilter

mod common;
mod embedded;
#[cfg(feature = "milvus")]
mod milvus;

/// The inner product the embedded index scores unit vectors with, for tools
/// (the vector benchmarks) that compute exact answers to compare against.
pub use common::dot;
pub use embedded::{EmbeddedVectorConfig, EmbeddedVectorIndex};
#[cfg(feature = "milvus")]
pub use milvus::{MilvusConfig, MilvusVectorIndex};

/// The domain crate, re-exported for tools (the vector benchmark) that depend
/// on this crate alone.
pub use karen_domain;
/// The tenant directories the embedded index lives in (its constructor's argument).
pub use karen_files::TenantDirectories;
/// The UUID crate used by entry keys, re-exported for the same tools.
pub use uuid;
