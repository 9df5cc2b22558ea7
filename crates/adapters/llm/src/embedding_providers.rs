//! Building an embedding provider from configuration, for the composition
//! root: the counterpart of [`crate::build_chat_provider`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use karen_domain::ports::{EmbeddingProvider, LlmError};
use secrecy::SecretString;
use serde::Deserialize;

use crate::{
    Endpoint, HashEmbedder, OPENAI_DEFAULT_BASE_URL, OpenAiCompatible, OutboundPolicy, Timeouts,
    http_client,
};

/// The model id of all-MiniLM-L6-v2's vectors (known to every build, so that
/// configuration naming it can be checked without the model).
pub const MINILM_MODEL_ID: &str = "all-minilm-l6-v2";

/// The length of all-MiniLM-L6-v2's vectors.
pub const MINILM_DIMENSIONS: usize = 384;

/// Which embedder a configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingProviderKind {
    /// The built-in deterministic embedder (`karen-offline-hash-384`).
    #[serde(alias = "offline")]
    Builtin,
    /// An OpenAI-compatible `/embeddings` API (OpenAI, vLLM, llama.cpp, Ollama).
    #[serde(alias = "openai-compatible", alias = "openai_compatible")]
    OpenAi,
    /// all-MiniLM-L6-v2 in-process (needs the `local-embeddings` feature).
    Local,
}

/// One configured embedding provider.
#[derive(Clone, Deserialize)]
pub struct EmbeddingProviderConfig {
    /// A name for logs, metrics and usage records.
    pub name: String,
    /// Which embedder.
    pub kind: EmbeddingProviderKind,
    /// OpenAI-compatible: the API base URL (OpenAI's by default).
    #[serde(default)]
    pub base_url: Option<String>,
    /// OpenAI-compatible: the credential; never logged, never in `Debug`.
    #[serde(default)]
    pub api_key: Option<SecretString>,
    /// OpenAI-compatible: inputs per upstream call
    /// ([`crate::DEFAULT_EMBEDDING_BATCH_SIZE`] by default).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Local: the directory `scripts/fetch-minilm.sh` filled.
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
}

impl fmt::Debug for EmbeddingProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("batch_size", &self.batch_size)
            .field("model_dir", &self.model_dir)
            .finish()
    }
}

/// Builds the embedder `config` describes, checking a base URL against
/// `policy` first. A local model is loaded here (about 90 MB read, blocking):
/// call it at startup.
pub fn build_embedding_provider(
    config: &EmbeddingProviderConfig,
    policy: &OutboundPolicy,
    timeouts: &Timeouts,
) -> Result<Arc<dyn EmbeddingProvider>, LlmError> {
    let name = config.name.trim();
    if name.is_empty() {
        return Err(LlmError::Refused(
            "an embedding provider needs a name".into(),
        ));
    }
    let refused =
        |reason: String| LlmError::Refused(format!("embedding provider '{name}': {reason}"));
    match config.kind {
        EmbeddingProviderKind::Builtin => Ok(Arc::new(HashEmbedder::new(name))),
        EmbeddingProviderKind::OpenAi => {
            let base_url = config
                .base_url
                .as_deref()
                .unwrap_or(OPENAI_DEFAULT_BASE_URL);
            let endpoint = Endpoint::parse(base_url, policy).map_err(|error| match error {
                LlmError::Refused(reason) => refused(reason),
                other => other,
            })?;
            let mut client = OpenAiCompatible::new(
                name,
                endpoint,
                config.api_key.clone(),
                http_client(policy, timeouts)?,
                *timeouts,
            );
            if let Some(size) = config.batch_size {
                client = client.with_embedding_batch_size(size);
            }
            Ok(Arc::new(client))
        }
        EmbeddingProviderKind::Local => {
            let Some(directory) = &config.model_dir else {
                return Err(refused(
                    "a local model needs model_dir (see scripts/fetch-minilm.sh)".into(),
                ));
            };
            local(name, directory).map_err(|error| match error {
                LlmError::Refused(reason) => refused(reason),
                other => other,
            })
        }
    }
}

#[cfg(feature = "local-embeddings")]
fn local(name: &str, directory: &std::path::Path) -> Result<Arc<dyn EmbeddingProvider>, LlmError> {
    let model = crate::MiniLmEmbedder::load(name, directory, crate::MiniLmConfig::default())?;
    Ok(Arc::new(model))
}

#[cfg(not(feature = "local-embeddings"))]
fn local(
    _name: &str,
    _directory: &std::path::Path,
) -> Result<Arc<dyn EmbeddingProvider>, LlmError> {
    Err(LlmError::Refused(
        "this build has no local embedding model (build karen-llm with the \
         local-embeddings feature)"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HASH_EMBEDDING_MODEL_ID;

    fn config(kind: EmbeddingProviderKind) -> EmbeddingProviderConfig {
        EmbeddingProviderConfig {
            name: "embedder".into(),
            kind,
            base_url: None,
            api_key: Some(SecretString::from("sk-embedding-secret")),
            batch_size: Some(64),
            model_dir: None,
        }
    }

    #[tokio::test]
    async fn builds_the_builtin_and_openai_embedders() {
        let policy = OutboundPolicy::default();
        let timeouts = Timeouts::default();
        let builtin =
            build_embedding_provider(&config(EmbeddingProviderKind::Builtin), &policy, &timeouts)
                .unwrap();
        assert_eq!(builtin.name(), "embedder");
        let vectors = builtin
            .embed(HASH_EMBEDDING_MODEL_ID, &["hello".to_owned()])
            .await
            .unwrap();
        assert_eq!(vectors.vectors.len(), 1);
        let openai =
            build_embedding_provider(&config(EmbeddingProviderKind::OpenAi), &policy, &timeouts)
                .unwrap();
        assert_eq!(openai.name(), "embedder");
    }

    #[test]
    fn refusals_name_the_provider_and_the_problem() {
        let policy = OutboundPolicy::default();
        let timeouts = Timeouts::default();
        let mut metadata = config(EmbeddingProviderKind::OpenAi);
        metadata.base_url = Some("http://169.254.169.254/v1".into());
        let reason = |config: &EmbeddingProviderConfig| match build_embedding_provider(
            config, &policy, &timeouts,
        ) {
            Err(LlmError::Refused(reason)) => reason,
            Err(other) => panic!("expected a refusal, got {other}"),
            Ok(provider) => panic!("expected a refusal, got {}", provider.name()),
        };
        let refused = reason(&metadata);
        assert!(
            refused.contains("embedding provider 'embedder'"),
            "{refused}"
        );
        assert!(refused.contains("link-local"), "{refused}");
        let refused = reason(&config(EmbeddingProviderKind::Local));
        assert!(refused.contains("model_dir"), "{refused}");
        let mut missing = config(EmbeddingProviderKind::Local);
        missing.model_dir = Some("/nonexistent/minilm".into());
        let refused = reason(&missing);
        assert!(
            refused.contains("embedding provider 'embedder'"),
            "{refused}"
        );
        let mut unnamed = config(EmbeddingProviderKind::Builtin);
        unnamed.name = " ".into();
        assert!(reason(&unnamed).contains("needs a name"));
    }

    #[test]
    fn debug_redacts_the_key_and_kinds_deserialize() {
        let debug = format!("{:?}", config(EmbeddingProviderKind::OpenAi));
        assert!(!debug.contains("sk-embedding-secret"), "{debug}");
        assert!(debug.contains("[redacted]"));
        let kinds: Vec<EmbeddingProviderKind> =
            serde_json::from_str(r#"["builtin","offline","openai","openai-compatible","local"]"#)
                .unwrap();
        assert_eq!(
            kinds,
            vec![
                EmbeddingProviderKind::Builtin,
                EmbeddingProviderKind::Builtin,
                EmbeddingProviderKind::OpenAi,
                EmbeddingProviderKind::OpenAi,
                EmbeddingProviderKind::Local,
            ]
        );
    }
}
