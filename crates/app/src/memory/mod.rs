//! Long-term memory and document retrieval: memories (private and shared),
//! documents cut into passages, the embedding cache, and hybrid recall that
//! fuses vector and full-text results. The SQL store is the source of truth;
//! the indexes are written after it and can be rebuilt from it.

mod documents;
mod indexer;
mod maintenance;
mod memories;
pub(crate) mod models;
mod recall;
mod reembed;
mod retrieval;

use std::sync::Arc;

use karen_domain::documents::{ChunkingConfig, DocumentExtractor};
use karen_domain::ports::{EmbeddingProvider, TextIndex, VectorIndex};

pub(crate) use documents::delete_document_rows;
pub use documents::{DocumentService, DocumentUpload};
pub use indexer::Indexer;
pub use maintenance::{CheckReport, Drift, IndexMaintenance, NoProgress, Progress, RebuildReport};
pub use memories::{MemoryInput, MemoryListScope, MemoryService};
pub use models::{IndexState, IndexStateService, JobSignal, TenantModels};
pub use recall::{RecallPolicy, TurnRecall};
pub use reembed::{JobOutcome, ReembedWorker};
pub use retrieval::{Passage, Recall, RecalledMemory, Retriever};

use crate::Deps;

/// One embedding model the platform offers.
#[derive(Clone)]
pub struct EmbeddingModel {
    /// The model id the provider is asked for; with the vectors' length it
    /// names the vector space.
    pub model: String,
    pub provider: Arc<dyn EmbeddingProvider>,
}

/// The embedding models the platform offers (from configuration); the first
/// is the default. Tenants choose among them (`settings.embedding_model`).
#[derive(Clone)]
pub struct EmbeddingModels {
    models: Vec<EmbeddingModel>,
}

impl EmbeddingModels {
    /// The catalog: `default` first, then `others` (a repeated id is dropped).
    pub fn new(default: EmbeddingModel, others: Vec<EmbeddingModel>) -> Self {
        let mut models = vec![default];
        for model in others {
            if !models.iter().any(|known| known.model == model.model) {
                models.push(model);
            }
        }
        Self { models }
    }

    /// The platform default.
    pub fn default_model(&self) -> &EmbeddingModel {
        // `new` always puts one model first.
        &self.models[0]
    }

    /// The model with this id, if the platform offers it.
    pub fn get(&self, model: &str) -> Option<&EmbeddingModel> {
        self.models.iter().find(|m| m.model == model)
    }

    /// The model a tenant's setting selects: the default when unset or no
    /// longer offered.
    pub fn for_setting(&self, setting: Option<&str>) -> &EmbeddingModel {
        setting
            .and_then(|model| self.get(model))
            .unwrap_or_else(|| self.default_model())
    }

    /// Every offered model id, the default first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| m.model.as_str())
    }
}

/// How memories are written back after a turn (platform-wide; tenants can
/// only turn it off, with `settings.memory_extraction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtractionMode {
    /// By the turn's language model; by rules when the offline provider answered.
    #[default]
    Auto,
    /// Always by rules (no extra model call).
    Rules,
    /// Never.
    Off,
}

impl ExtractionMode {
    /// Parses `auto`, `rules` or `off`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(Self::Auto),
            "rules" => Some(Self::Rules),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

/// The search side of memory and retrieval (from the composition root).
#[derive(Clone)]
pub struct SearchPorts {
    pub vector: Arc<dyn VectorIndex>,
    pub text: Arc<dyn TextIndex>,
    pub embedders: EmbeddingModels,
    pub extractor: Arc<dyn DocumentExtractor>,
    pub chunking: ChunkingConfig,
    /// The largest document accepted, in bytes.
    pub max_document_bytes: usize,
    /// What a chat turn recalls.
    pub recall: RecallPolicy,
    /// How memories are written back after a turn.
    pub extraction: ExtractionMode,
    /// Wakes the re-embedding worker when a tenant's model changes.
    pub jobs: Arc<JobSignal>,
}

/// The memory and retrieval services.
#[derive(Clone)]
pub struct MemoryServices {
    pub memories: MemoryService,
    pub documents: DocumentService,
    pub retriever: Retriever,
    pub indexer: Indexer,
    /// Rebuilds, drift checks and repairs of the search indexes.
    pub maintenance: IndexMaintenance,
    /// Runs re-embedding jobs (started by `karen serve`).
    pub reembed: ReembedWorker,
    /// The tenant's embedding model and job, for its admins.
    pub index_state: IndexStateService,
}

impl MemoryServices {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        let indexer = Indexer::new(deps.clone());
        let retriever = Retriever::new(deps.clone(), indexer.clone());
        let maintenance = IndexMaintenance::new(deps.clone(), indexer.clone());
        Self {
            memories: MemoryService::new(deps.clone(), indexer.clone(), retriever.clone()),
            documents: DocumentService::new(deps.clone(), indexer.clone()),
            reembed: ReembedWorker::new(maintenance.clone()),
            index_state: IndexStateService::new(deps),
            maintenance,
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
