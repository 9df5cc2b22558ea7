//! Long-term memory and document retrieval: memories (private and shared),
//! documents cut into passages, the embedding cache, and hybrid recall that
//! fuses vector and full-text results. The SQL store is the source of truth;
//! the indexes are written after it and can be rebuilt from it.

mod documents;
mod indexer;
mod memories;
mod retrieval;

use std::sync::Arc;

use karen_domain::documents::{ChunkingConfig, DocumentExtractor};
use karen_domain::ports::{EmbeddingProvider, TextIndex, VectorIndex};

pub use documents::{DocumentService, DocumentUpload};
pub use indexer::Indexer;
pub use memories::{MemoryInput, MemoryListScope, MemoryService};
pub use retrieval::{Passage, Recall, RecalledMemory, Retriever};

use crate::Deps;

/// The search side of memory and retrieval (from the composition root).
#[derive(Clone)]
pub struct SearchPorts {
    pub vector: Arc<dyn VectorIndex>,
    pub text: Arc<dyn TextIndex>,
    pub embedder: Arc<dyn EmbeddingProvider>,
    /// The model id the embedder is asked for; with the vectors' length it
    /// names the vector space.
    pub embedding_model: String,
    pub extractor: Arc<dyn DocumentExtractor>,
    pub chunking: ChunkingConfig,
    /// The largest document accepted, in bytes.
    pub max_document_bytes: usize,
}

/// The memory and retrieval services.
#[derive(Clone)]
pub struct MemoryServices {
    pub memories: MemoryService,
    pub documents: DocumentService,
    pub retriever: Retriever,
    pub indexer: Indexer,
}

impl MemoryServices {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        let indexer = Indexer::new(deps.clone());
        let retriever = Retriever::new(deps.clone(), indexer.clone());
        Self {
            memories: MemoryService::new(deps.clone(), indexer.clone(), retriever.clone()),
            documents: DocumentService::new(deps, indexer.clone()),
            retriever,
            indexer,
        }
    }
}

/// Hex SHA-256 of `parts`, each followed by a newline.
pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        context.update(part);
        context.update(b"\n");
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
