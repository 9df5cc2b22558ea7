//! The search side of memory and retrieval: which vector index, full-text
//! index and embedder the configuration names (`[memory]`), built for the
//! deployment mode, and the tenant namespaces that purge them with a tenant.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use karen_app::memory::{EmbeddingModel, EmbeddingModels, ExtractionMode, RecallPolicy};
use karen_domain::ports::{TenantNamespace, TextIndex, VectorIndex};
use karen_domain::{Result, TenantId};
use karen_files::TenantDirectories;
use karen_llm::{
    EmbeddingProviderConfig, EmbeddingProviderKind, HASH_EMBEDDING_MODEL_ID, OutboundPolicy,
    build_embedding_provider,
};
use karen_sql::SqlStore;
use karen_text::{EmbeddedTextIndex, EmbeddedTextOptions, PostgresTextIndex};
use karen_vector::{EmbeddedVectorConfig, EmbeddedVectorIndex, MilvusConfig, MilvusVectorIndex};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Mode};

/// `[memory]`: long-term memory and document retrieval.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// `embedded` (per tenant, on this machine's disk) or `milvus`. Default:
    /// embedded in mode minimal, milvus in standard and full (embedded
    /// indexes on one replica's disk cannot serve several replicas).
    pub vector_index: Option<String>,
    /// `embedded` (tantivy, per tenant, on disk) or `postgres` (full-text
    /// search under row-level security). Default: postgres on PostgreSQL.
    pub text_index: Option<String>,
    pub milvus: MilvusSection,
    pub embedding: EmbeddingSection,
    /// `[[memory.embedders]]`: further embedding models tenants may choose
    /// (`settings.embedding_model`), with the same keys as `[memory.embedding]`.
    pub embedders: Vec<EmbeddingSection>,
    /// The largest document upload, in bytes.
    pub max_document_bytes: usize,
    pub recall: RecallSection,
    /// How chat turns write memories back: `auto` (by the turn's language
    /// model, by rules when the offline provider answered), `rules` (never an
    /// extra model call) or `off`. Tenants can turn it off for themselves.
    pub extraction: String,
}

/// `[memory.recall]`: what each chat turn recalls and puts in the prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecallSection {
    /// Most of the user's memories offered to the model.
    pub memories: usize,
    /// Most document passages offered to the model.
    pub passages: usize,
    /// Most tokens (estimated) the offered material may take.
    pub token_budget: u32,
    /// Cosine similarity from which a result counts as relevant on its own;
    /// below it, a result must share a content word with the message.
    pub min_similarity: f32,
}

impl Default for RecallSection {
    fn default() -> Self {
        let policy = RecallPolicy::default();
        Self {
            memories: policy.memories,
            passages: policy.passages,
            token_budget: policy.token_budget,
            min_similarity: policy.min_similarity,
        }
    }
}

impl RecallSection {
    /// The policy this section sets.
    pub fn policy(&self) -> RecallPolicy {
        RecallPolicy {
            memories: self.memories,
            passages: self.passages,
            token_budget: self.token_budget,
            min_similarity: self.min_similarity,
        }
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            vector_index: None,
            text_index: None,
            milvus: MilvusSection::default(),
            embedding: EmbeddingSection::default(),
            embedders: Vec::new(),
            max_document_bytes: 20 * 1024 * 1024,
            recall: RecallSection::default(),
            extraction: "auto".into(),
        }
    }
}

/// `[memory.milvus]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MilvusSection {
    /// gRPC endpoint.
    pub url: String,
    /// An environment variable holding `user:password` or an API key.
    pub token_env: Option<String>,
    /// The Milvus database (the server's default when unset).
    pub database: Option<String>,
    /// Prefix of Karen's collection names, so deployments can share a Milvus.
    pub collection_prefix: String,
    /// Partitions of each collection (tenants are the partition key).
    pub partitions: u32,
    pub timeout_secs: u64,
}

impl Default for MilvusSection {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:19530".into(),
            token_env: None,
            database: None,
            collection_prefix: "karen".into(),
            partitions: 64,
            timeout_secs: 10,
        }
    }
}

/// `[memory.embedding]`: the platform's embedding model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingSection {
    /// `builtin` (deterministic, no download; the default), `local`
    /// (all-MiniLM-L6-v2 in-process, see scripts/fetch-minilm.sh) or `openai`
    /// (any OpenAI-compatible `/v1/embeddings`).
    pub kind: String,
    /// The model id sent to the provider (and naming the vector space).
    pub model: String,
    /// `openai`: the API base URL.
    pub base_url: Option<String>,
    /// `openai`: the environment variable holding the credential.
    pub api_key_env: Option<String>,
    /// `openai`: inputs per upstream call.
    pub batch_size: Option<usize>,
    /// `local`: the directory scripts/fetch-minilm.sh filled.
    pub model_dir: Option<PathBuf>,
}

impl Default for EmbeddingSection {
    fn default() -> Self {
        Self {
            kind: "builtin".into(),
            model: HASH_EMBEDDING_MODEL_ID.into(),
            base_url: None,
            api_key_env: None,
            batch_size: None,
            model_dir: None,
        }
    }
}

impl EmbeddingSection {
    fn provider_kind(&self, key: &str) -> std::result::Result<EmbeddingProviderKind, String> {
        match self.kind.as_str() {
            "builtin" | "offline" => Ok(EmbeddingProviderKind::Builtin),
            "openai" | "openai-compatible" => Ok(EmbeddingProviderKind::OpenAi),
            "local" => Ok(EmbeddingProviderKind::Local),
            other => Err(format!(
                "{key}.kind: '{other}' is not builtin, local or openai"
            )),
        }
    }

    /// Problems of this section, each naming its key under `key`.
    fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(problem) = self.provider_kind(key) {
            problems.push(problem);
        }
        if self.model.trim().is_empty() {
            problems.push(format!("{key}.model: must name the embedding model"));
        }
        if let Some(var) = &self.api_key_env
            && std::env::var_os(var).is_none()
        {
            problems.push(format!(
                "{key}.api_key_env: the environment variable {var} is not set"
            ));
        }
        problems
    }

    /// The provider this section describes.
    fn build(
        &self,
        key: &str,
        config: &Config,
        policy: &OutboundPolicy,
    ) -> anyhow::Result<EmbeddingModel> {
        let embedding = EmbeddingProviderConfig {
            name: format!("embeddings-{}", self.kind),
            kind: self.provider_kind(key).map_err(anyhow::Error::msg)?,
            base_url: self.base_url.clone(),
            api_key: secret_from_env(self.api_key_env.as_ref()),
            batch_size: self.batch_size,
            model_dir: self.model_dir.clone(),
        };
        let provider =
            build_embedding_provider(&embedding, policy, &crate::models::timeouts(&config.llm))
                .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        Ok(EmbeddingModel {
            model: self.model.clone(),
            provider,
        })
    }
}

/// Which implementation serves an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexBackend {
    Embedded,
    Milvus,
    Postgres,
}

impl MemoryConfig {
    /// The vector index the configuration selects for `mode`.
    pub fn vector_backend(&self, mode: Mode) -> std::result::Result<IndexBackend, String> {
        match self.vector_index.as_deref() {
            None if mode == Mode::Minimal => Ok(IndexBackend::Embedded),
            None => Ok(IndexBackend::Milvus),
            Some("embedded") => Ok(IndexBackend::Embedded),
            Some("milvus") => Ok(IndexBackend::Milvus),
            Some(other) => Err(format!(
                "memory.vector_index: '{other}' is not embedded or milvus"
            )),
        }
    }

    /// The full-text index the configuration selects for a store.
    pub fn text_backend(&self, postgres: bool) -> std::result::Result<IndexBackend, String> {
        match self.text_index.as_deref() {
            None if postgres => Ok(IndexBackend::Postgres),
            None => Ok(IndexBackend::Embedded),
            Some("embedded") => Ok(IndexBackend::Embedded),
            Some("postgres") if postgres => Ok(IndexBackend::Postgres),
            Some("postgres") => Err(
                "memory.text_index: 'postgres' needs the PostgreSQL store (database.url)".into(),
            ),
            Some(other) => Err(format!(
                "memory.text_index: '{other}' is not embedded or postgres"
            )),
        }
    }

    /// Every configured embedding model with its configuration key, the
    /// default first.
    fn embedding_sections(&self) -> impl Iterator<Item = (String, &EmbeddingSection)> {
        std::iter::once(("memory.embedding".to_owned(), &self.embedding)).chain(
            self.embedders
                .iter()
                .enumerate()
                .map(|(i, section)| (format!("memory.embedders[{i}]"), section)),
        )
    }

    /// Problems of this section, each naming its key.
    pub fn problems(&self, mode: Mode, postgres: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(problem) = self.vector_backend(mode) {
            problems.push(problem);
        }
        if let Err(problem) = self.text_backend(postgres) {
            problems.push(problem);
        }
        for (key, section) in self.embedding_sections() {
            problems.extend(section.problems(&key));
        }
        if let Some(var) = &self.milvus.token_env
            && std::env::var_os(var).is_none()
        {
            problems.push(format!(
                "memory.milvus.token_env: the environment variable {var} is not set"
            ));
        }
        if ExtractionMode::parse(&self.extraction).is_none() {
            problems.push(format!(
                "memory.extraction: '{}' is not auto, rules or off",
                self.extraction
            ));
        }
        if self.recall.memories > 50 || self.recall.passages > 50 {
            problems.push("memory.recall.memories and passages: at most 50 each".into());
        }
        if self.recall.token_budget > 100_000 {
            problems.push("memory.recall.token_budget: at most 100000".into());
        }
        if !(-1.0..=1.0).contains(&self.recall.min_similarity) {
            problems.push("memory.recall.min_similarity: between -1 and 1".into());
        }
        if !(1024..=(1 << 30)).contains(&self.max_document_bytes) {
            problems.push("memory.max_document_bytes: between 1024 and 1073741824".into());
        }
        if !(1..=4096).contains(&self.milvus.partitions) {
            problems.push("memory.milvus.partitions: between 1 and 4096".into());
        }
        if !(1..=600).contains(&self.milvus.timeout_secs) {
            problems.push("memory.milvus.timeout_secs: between 1 and 600".into());
        }
        problems
    }
}

fn secret_from_env(var: Option<&String>) -> Option<SecretString> {
    var.and_then(|v| std::env::var(v).ok())
        .map(SecretString::from)
}

/// The vector index, text index and embedder of a running Karen.
#[derive(Clone)]
pub struct SearchIndexes {
    pub vector: Arc<dyn VectorIndex>,
    pub text: Arc<dyn TextIndex>,
    /// The embedding models tenants may use, the default first.
    pub embedders: EmbeddingModels,
}

impl SearchIndexes {
    /// Builds (and connects) what `config` names.
    pub async fn open(config: &Config, store: &SqlStore) -> anyhow::Result<Self> {
        let memory = &config.memory;
        let directories = TenantDirectories::new(&config.data_dir);
        let vector: Arc<dyn VectorIndex> = match memory
            .vector_backend(config.mode)
            .map_err(anyhow::Error::msg)?
        {
            IndexBackend::Milvus => {
                let milvus = MilvusConfig {
                    token: secret_from_env(memory.milvus.token_env.as_ref()),
                    database: memory.milvus.database.clone(),
                    collection_prefix: memory.milvus.collection_prefix.clone(),
                    num_partitions: memory.milvus.partitions,
                    timeout: Duration::from_secs(memory.milvus.timeout_secs),
                    ..MilvusConfig::new(memory.milvus.url.clone())
                };
                Arc::new(MilvusVectorIndex::connect(milvus).await.with_context(|| {
                    format!(
                        "connecting to Milvus at {} (memory.milvus.url)",
                        memory.milvus.url
                    )
                })?)
            }
            _ => Arc::new(EmbeddedVectorIndex::new(
                directories.clone(),
                EmbeddedVectorConfig::default(),
            )),
        };
        let text: Arc<dyn TextIndex> = match memory
            .text_backend(store.postgres_pool().is_some())
            .map_err(anyhow::Error::msg)?
        {
            IndexBackend::Postgres => {
                let pool = store
                    .postgres_pool()
                    .context("memory.text_index = postgres needs the PostgreSQL store")?;
                Arc::new(PostgresTextIndex::new(pool.clone()))
            }
            _ => Arc::new(EmbeddedTextIndex::new(
                directories,
                EmbeddedTextOptions::default(),
            )),
        };
        let policy = OutboundPolicy::new(config.llm.allow_private_addresses.iter().cloned());
        let mut models = Vec::new();
        for (key, section) in memory.embedding_sections() {
            models.push(section.build(&key, config, &policy)?);
        }
        let mut models = models.into_iter();
        let default = models
            .next()
            .context("memory.embedding: the default embedding model is missing")?;
        Ok(Self {
            vector,
            text,
            embedders: EmbeddingModels::new(default, models.collect()),
        })
    }

    /// The namespaces that remove a deleted tenant's entries from the indexes.
    pub fn namespaces(&self) -> Vec<Arc<dyn TenantNamespace>> {
        vec![
            Arc::new(TextNamespace(self.text.clone())),
            Arc::new(VectorNamespace(self.vector.clone())),
        ]
    }
}

/// A tenant's full-text entries, as a namespace purged with the tenant.
struct TextNamespace(Arc<dyn TextIndex>);

#[async_trait]
impl TenantNamespace for TextNamespace {
    fn name(&self) -> &'static str {
        "text index"
    }

    async fn provision(&self, _tenant: TenantId) -> Result<()> {
        // Created on first write.
        Ok(())
    }

    async fn destroy(&self, tenant: TenantId) -> Result<()> {
        self.0.purge_tenant(tenant).await
    }

    async fn holds_data(&self, tenant: TenantId) -> Result<bool> {
        Ok(!self.0.keys(tenant).await?.is_empty())
    }
}

/// A tenant's vectors in every space, as a namespace purged with the tenant.
struct VectorNamespace(Arc<dyn VectorIndex>);

#[async_trait]
impl TenantNamespace for VectorNamespace {
    fn name(&self) -> &'static str {
        "vector index"
    }

    async fn provision(&self, _tenant: TenantId) -> Result<()> {
        Ok(())
    }

    async fn destroy(&self, tenant: TenantId) -> Result<()> {
        self.0.purge_tenant(tenant).await
    }

    async fn holds_data(&self, tenant: TenantId) -> Result<bool> {
        for space in self.0.spaces(tenant).await? {
            if !self.0.keys(tenant, &space).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
