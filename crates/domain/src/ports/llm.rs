//! Language-model providers: chat completions (whole or streamed) and
//! embeddings, behind one port whatever the vendor. Implementations live in
//! `karen-llm` (OpenAI-compatible, Anthropic Messages, the offline provider,
//! and the resilient chain that adds retries, fallback and circuit breakers).

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures_core::Stream;
use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
    Tool,
}

impl ChatRole {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
            ChatRole::Tool => "tool",
        }
    }
}

/// A function call requested by the model (OpenAI's `tool_calls` item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    /// Always `function` today.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

/// The function and its JSON-encoded arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// One message of a conversation sent to a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    /// Text; absent on an assistant message that only calls tools.
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `tool` messages: the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn text(role: ChatRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
}

/// The model id of every answer of Karen's offline provider, which quotes
/// what recall found and never generates text.
pub const OFFLINE_MODEL_ID: &str = "karen-offline-extractive";

/// A chat completion request, vendor-neutral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The upstream model id (aliases are resolved before this point).
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    /// OpenAI-format tool definitions, passed through untouched.
    pub tools: Option<serde_json::Value>,
    /// OpenAI-format tool choice, passed through untouched.
    pub tool_choice: Option<serde_json::Value>,
    pub stop: Option<Vec<String>>,
    /// The end user, for the vendor's abuse monitoring (an opaque id, never an email).
    pub user: Option<String>,
    /// Material Karen retrieved for this turn (memories, passages); the offline
    /// provider answers from it, model providers receive it in the messages.
    pub context: Vec<ContextItem>,
}

impl ChatRequest {
    /// Offers retrieved material to the model: kept in `context` (what the
    /// offline provider quotes) and written into one system message after the
    /// leading system messages (what model providers read).
    pub fn offer_context(&mut self, items: Vec<ContextItem>) {
        if items.is_empty() {
            return;
        }
        let position = self
            .messages
            .iter()
            .take_while(|m| m.role == ChatRole::System)
            .count();
        self.messages.insert(
            position,
            ChatMessage::text(ChatRole::System, context_prompt(&items)),
        );
        self.context = items;
    }
}

/// The system message that hands retrieved material to a model.
pub fn context_prompt(items: &[ContextItem]) -> String {
    let mut prompt = String::from(
        "Karen retrieved the following from the user's memories and the organisation's \
         documents for this message. Use what is relevant, cite it with its marker (like [1]) \
         where you use it, and ignore what is not relevant.",
    );
    for item in items {
        prompt.push_str("\n\n");
        prompt.push_str(&item.source);
        prompt.push_str(": ");
        // One line per item: the passages' own line breaks carry nothing here.
        for (position, word) in item.text.split_whitespace().enumerate() {
            if position > 0 {
                prompt.push(' ');
            }
            prompt.push_str(word);
        }
    }
    prompt
}

/// A piece of retrieved material offered to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextItem {
    /// Its marker and where it came from (`[1] memory`, `[2] Handbook › Leave`…).
    pub source: String,
    pub text: String,
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Whether the upstream reported the counts (otherwise Karen counted them).
    pub reported: bool,
}

/// A whole chat completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The upstream's completion id, if any.
    pub id: Option<String>,
    /// The model that answered (may differ from the one asked, e.g. a dated snapshot).
    pub model: String,
    pub message: ChatMessage,
    /// `stop`, `length`, `tool_calls`, `content_filter`…
    pub finish_reason: Option<String>,
    pub usage: Option<TokenUsage>,
    /// The provider that actually answered, when a chain picked one of its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// A fragment of a streamed tool call (arguments arrive in pieces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// One event of a streamed completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatEvent {
    /// New text and/or tool-call fragments.
    Delta {
        content: Option<String>,
        tool_calls: Vec<ToolCallDelta>,
    },
    /// The end: why it stopped and, when the upstream says, the token counts.
    Finish {
        finish_reason: Option<String>,
        usage: Option<TokenUsage>,
        model: Option<String>,
        /// The provider that actually answered, when a chain picked one of its members.
        provider: Option<String>,
    },
}

/// A stream of completion events; dropping it cancels the upstream request.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, LlmError>> + Send>>;

/// Why a provider call failed, in the terms routing decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmError {
    /// No answer within the connect or overall timeout.
    Timeout,
    /// 429 from the upstream, with its `Retry-After` if it sent one.
    RateLimited { retry_after: Option<Duration> },
    /// Another non-success status from the upstream.
    Upstream { status: u16, message: String },
    /// The connection could not be made or broke.
    Connection(String),
    /// The upstream answered something that is not a valid completion.
    InvalidResponse(String),
    /// The request was refused before leaving Karen (SSRF policy, unknown model…).
    Refused(String),
    /// The provider's circuit breaker is open after repeated failures.
    CircuitOpen { provider: String },
}

impl LlmError {
    /// Whether another attempt (same or next provider) may succeed: timeouts,
    /// 429, 5xx, broken connections and open circuits.
    pub fn is_transient(&self) -> bool {
        match self {
            LlmError::Timeout
            | LlmError::RateLimited { .. }
            | LlmError::Connection(_)
            | LlmError::CircuitOpen { .. } => true,
            LlmError::Upstream { status, .. } => *status >= 500,
            LlmError::InvalidResponse(_) | LlmError::Refused(_) => false,
        }
    }
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LlmError::Timeout => f.write_str("the model provider did not answer in time"),
            LlmError::RateLimited {
                retry_after: Some(after),
            } => {
                write!(
                    f,
                    "the model provider is rate limiting; retry in {} s",
                    after.as_secs().max(1)
                )
            }
            LlmError::RateLimited { retry_after: None } => {
                f.write_str("the model provider is rate limiting")
            }
            LlmError::Upstream { status, message } => {
                write!(f, "the model provider answered {status}: {message}")
            }
            LlmError::Connection(detail) => write!(f, "cannot reach the model provider: {detail}"),
            LlmError::InvalidResponse(detail) => {
                write!(f, "the model provider sent an invalid response: {detail}")
            }
            LlmError::Refused(reason) => write!(f, "request refused: {reason}"),
            LlmError::CircuitOpen { provider } => {
                write!(
                    f,
                    "provider '{provider}' is failing and temporarily skipped"
                )
            }
        }
    }
}

impl std::error::Error for LlmError {}

/// A chat model provider.
#[async_trait]
pub trait ChatProvider: Send + Sync + 'static {
    /// A name for logs, metrics and usage records (`openai`, `offline`…), never a credential.
    fn name(&self) -> &str;
    /// One whole completion.
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;
    /// A streamed completion; dropping the stream cancels the upstream request.
    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError>;
    /// The model ids this provider serves.
    async fn models(&self) -> Result<Vec<String>, LlmError>;
}

/// Embedding vectors of some inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
    /// Whether `prompt_tokens` is (at least partly) Karen's estimate rather
    /// than the provider's count.
    #[serde(default)]
    pub counted_locally: bool,
}

/// An embedding model provider.
#[async_trait]
pub trait EmbeddingProvider: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Embeds each input, in order.
    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, LlmError>;
}

/// A model name resolved for one tenant: the provider (usually a resilient
/// chain with fallback) and the model id to send upstream.
#[derive(Clone)]
pub struct RoutedModel {
    pub provider: std::sync::Arc<dyn ChatProvider>,
    pub upstream_model: String,
}

impl fmt::Debug for RoutedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutedModel")
            .field("provider", &self.provider.name())
            .field("upstream_model", &self.upstream_model)
            .finish()
    }
}

/// An embedding model served by a tenant's own providers: the provider
/// (a resilient chain), the model id sent upstream, and the name its vectors
/// are cached under (the model at this provider configuration, so that a
/// tenant's own model never shares cached vectors with a platform model of
/// the same name).
#[derive(Clone)]
pub struct RoutedEmbeddings {
    pub provider: std::sync::Arc<dyn EmbeddingProvider>,
    pub upstream_model: String,
    pub cache_key: String,
}

impl fmt::Debug for RoutedEmbeddings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutedEmbeddings")
            .field("provider", &self.provider.name())
            .field("upstream_model", &self.upstream_model)
            .field("cache_key", &self.cache_key)
            .finish()
    }
}

/// Resolves model names (or aliases) to providers, per tenant.
#[async_trait]
pub trait ModelRouter: Send + Sync + 'static {
    /// The provider chain and upstream id for `model`; `validation_failed`
    /// naming the model when the tenant may not use it.
    async fn route(&self, tenant: crate::TenantId, model: &str) -> crate::Result<RoutedModel>;
    /// The model names a tenant may use.
    async fn models(&self, tenant: crate::TenantId) -> crate::Result<Vec<String>>;
    /// The tenant's own providers that embed with `model` (its OpenAI-compatible
    /// providers listing it), or `None` when none does.
    async fn route_embeddings(
        &self,
        tenant: crate::TenantId,
        model: &str,
    ) -> crate::Result<Option<RoutedEmbeddings>>;
    /// The embedding models the tenant's own providers may serve.
    async fn embedding_models(&self, tenant: crate::TenantId) -> crate::Result<Vec<String>>;
    /// The model used when neither the request nor the persona names one.
    fn default_model(&self) -> String;
    /// Checks that a tenant's provider URL is allowed by the outbound policy
    /// (`validation_failed` naming the problem otherwise).
    fn check_provider_url(&self, base_url: &str) -> crate::Result<()>;
}
