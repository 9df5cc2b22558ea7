//! Karen's model providers behind the [`ChatProvider`] and
//! [`EmbeddingProvider`] ports: an OpenAI-compatible client (OpenAI, vLLM,
//! llama.cpp server, Ollama) for chat and embeddings, an Anthropic Messages
//! client, the offline provider for embedded mode without a model, the
//! built-in [`HashEmbedder`], all-MiniLM-L6-v2 in-process (feature
//! `local-embeddings`), and [`ResilientChat`] / [`ResilientEmbeddings`],
//! which add retries, fallback and circuit breakers over any of them.
//!
//! Every outbound request goes through the [`OutboundPolicy`] (the SSRF
//! guard) and the [`Timeouts`].

mod anthropic;
mod anthropic_wire;
mod breaker;
mod embedding_common;
mod embedding_providers;
mod hash_embedder;
mod http;
#[cfg(feature = "local-embeddings")]
mod minilm;
#[cfg(feature = "local-embeddings")]
mod minilm_bert;
mod offline;
mod openai;
mod openai_wire;
mod policy;
mod resilience;
mod resilient_embeddings;
mod sse;
#[cfg(test)]
mod test_upstream;
mod tokens;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use anthropic::{ANTHROPIC_API_VERSION, Anthropic};
pub use breaker::{BreakerPermit, BreakerRegistry, BreakerState, CircuitBreaker};
pub use embedding_providers::{
    EmbeddingProviderConfig, EmbeddingProviderKind, MINILM_DIMENSIONS, MINILM_MODEL_ID,
    build_embedding_provider,
};
pub use hash_embedder::{
    HASH_EMBEDDING_DIMENSIONS, HASH_EMBEDDING_MODEL_ID, HashEmbedder, is_zero_vector,
};
pub use karen_domain::ports::{ChatProvider, EmbeddingProvider, Embeddings, LlmError};
#[cfg(feature = "local-embeddings")]
pub use minilm::{MiniLmConfig, MiniLmEmbedder};
pub use offline::{OFFLINE_MODEL_ID, OfflineProvider};
pub use openai::{DEFAULT_EMBEDDING_BATCH_SIZE, OpenAiCompatible};
pub use policy::{AddressClass, Endpoint, OutboundPolicy, classify, http_client};
pub use resilience::{ChainMember, Member, Named, ResilientChat, RetryPolicy};
pub use resilient_embeddings::{EmbeddingChainMember, ResilientEmbeddings, ServedEmbeddings};
pub use tokens::{estimate_prompt_tokens, estimate_tokens};

use secrecy::SecretString;
use serde::Deserialize;

/// The default base URL of each vendor.
pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Anthropic's API root (the client appends `/v1/messages`).
pub const ANTHROPIC_DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// How long outbound calls may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a TCP (and TLS) connection.
    pub connect: Duration,
    /// A whole non-streamed call; for a stream, the wait for its headers.
    pub request: Duration,
    /// The longest silence between two events of a stream.
    pub stream_idle: Duration,
}

impl Default for Timeouts {
    /// 5 s to connect, 120 s per call (long answers from slow local models),
    /// 60 s of silence in a stream.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(120),
            stream_idle: Duration::from_secs(60),
        }
    }
}

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The OpenAI HTTP API (also vLLM, llama.cpp server, Ollama's `/v1`).
    #[serde(alias = "openai-compatible", alias = "openai_compatible")]
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Karen's built-in offline provider (no network, no language model).
    Offline,
}

/// One configured model provider.
#[derive(Clone, Deserialize)]
pub struct ProviderConfig {
    /// A name for logs, metrics and usage records.
    pub name: String,
    /// Which API it speaks.
    pub kind: ProviderKind,
    /// The API base URL; each kind has a default (none needed for offline).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The credential; never logged, never in `Debug`.
    #[serde(default)]
    pub api_key: Option<SecretString>,
    /// The model ids this provider serves: what the Anthropic provider
    /// reports as its models; for the others a routing hint for the caller.
    #[serde(default)]
    pub models: Vec<String>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("models", &self.models)
            .finish()
    }
}

/// Builds the provider `config` describes, checking its base URL against
/// `policy` first so that a refused URL fails at startup with a clear error
/// rather than at the first chat.
pub fn build_chat_provider(
    config: &ProviderConfig,
    policy: &OutboundPolicy,
    timeouts: &Timeouts,
) -> Result<Arc<dyn ChatProvider>, LlmError> {
    if config.name.trim().is_empty() {
        return Err(LlmError::Refused("a model provider needs a name".into()));
    }
    let base_url = |default: &str| {
        config
            .base_url
            .clone()
            .unwrap_or_else(|| default.to_owned())
    };
    let endpoint_for = |raw: &str| {
        Endpoint::parse(raw, policy).map_err(|error| match error {
            LlmError::Refused(reason) => {
                LlmError::Refused(format!("model provider '{}': {reason}", config.name))
            }
            other => other,
        })
    };
    let provider: Arc<dyn ChatProvider> = match config.kind {
        ProviderKind::OpenAi => {
            let endpoint = endpoint_for(&base_url(OPENAI_DEFAULT_BASE_URL))?;
            Arc::new(OpenAiCompatible::new(
                config.name.clone(),
                endpoint,
                config.api_key.clone(),
                http_client(policy, timeouts)?,
                *timeouts,
            ))
        }
        ProviderKind::Anthropic => {
            let endpoint = endpoint_for(&base_url(ANTHROPIC_DEFAULT_BASE_URL))?;
            let api_key = config.api_key.clone().ok_or_else(|| {
                LlmError::Refused(format!(
                    "model provider '{}': Anthropic needs an API key",
                    config.name
                ))
            })?;
            Arc::new(Anthropic::new(
                config.name.clone(),
                endpoint,
                api_key,
                config.models.clone(),
                http_client(policy, timeouts)?,
                *timeouts,
            ))
        }
        ProviderKind::Offline => Arc::new(OfflineProvider::new(config.name.clone())),
    };
    Ok(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: ProviderKind, base_url: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            name: "main".into(),
            kind,
            base_url: base_url.map(str::to_owned),
            api_key: Some(SecretString::from("sk-top-secret")),
            models: vec!["model-a".into()],
        }
    }

    #[test]
    fn debug_redacts_the_key() {
        let debug = format!("{:?}", config(ProviderKind::OpenAi, None));
        assert!(!debug.contains("sk-top-secret"), "{debug}");
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn builds_each_kind_with_default_urls() {
        let policy = OutboundPolicy::default();
        let timeouts = Timeouts::default();
        for kind in [
            ProviderKind::OpenAi,
            ProviderKind::Anthropic,
            ProviderKind::Offline,
        ] {
            let provider = build_chat_provider(&config(kind, None), &policy, &timeouts).unwrap();
            assert_eq!(provider.name(), "main");
        }
    }

    #[test]
    fn refused_base_urls_name_the_provider_and_the_problem() {
        let policy = OutboundPolicy::default();
        let result = build_chat_provider(
            &config(ProviderKind::OpenAi, Some("http://169.254.169.254/v1")),
            &policy,
            &Timeouts::default(),
        );
        match result {
            Err(LlmError::Refused(reason)) => {
                assert!(reason.contains("model provider 'main'"), "{reason}");
                assert!(reason.contains("link-local"), "{reason}");
            }
            other => panic!(
                "expected a refusal, got {:?}",
                other.map(|p| p.name().to_owned())
            ),
        }
    }

    #[test]
    fn anthropic_needs_a_key() {
        let mut config = config(ProviderKind::Anthropic, None);
        config.api_key = None;
        let result = build_chat_provider(&config, &OutboundPolicy::default(), &Timeouts::default());
        assert!(matches!(result, Err(LlmError::Refused(reason)) if reason.contains("API key")));
    }

    #[test]
    fn kinds_deserialize_from_configuration_names() {
        let kinds: Vec<ProviderKind> =
            serde_json::from_str(r#"["openai","anthropic","offline","openai-compatible"]"#)
                .unwrap();
        assert_eq!(
            kinds,
            vec![
                ProviderKind::OpenAi,
                ProviderKind::Anthropic,
                ProviderKind::Offline,
                ProviderKind::OpenAi
            ]
        );
    }
}
