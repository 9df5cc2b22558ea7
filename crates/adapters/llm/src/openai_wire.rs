//! The OpenAI API's JSON shapes, as sent and as received. Received shapes
//! are lenient where compatible servers differ (missing ids, `null` lists,
//! arguments as an object instead of a string).

use karen_domain::ports::{
    ChatMessage, ChatRequest, FunctionCall, LlmError, TokenUsage, ToolCall, ToolCallDelta,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{error_message, truncate};

/// `POST /chat/completions`.
#[derive(Debug, Serialize)]
pub(crate) struct ChatBody<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    /// Passed through untouched: the caller speaks OpenAI's tool format.
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stream_options: Option<StreamOptions>,
}

impl<'a> ChatBody<'a> {
    /// The body for `request`. Retrieved context is not added here: the
    /// assistant service already placed it in the messages.
    pub(crate) fn new(request: &'a ChatRequest, stream: bool) -> Self {
        Self {
            model: &request.model,
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            tools: request.tools.as_ref(),
            tool_choice: request.tool_choice.as_ref(),
            stop: request.stop.as_deref(),
            user: request.user.as_deref(),
            stream,
            stream_options: None,
        }
    }
}

/// Asks for a final chunk carrying the token counts.
#[derive(Debug, Serialize)]
pub(crate) struct StreamOptions {
    pub(crate) include_usage: bool,
}

/// A whole `chat.completion`.
#[derive(Debug, Deserialize)]
pub(crate) struct CompletionWire {
    pub(crate) id: Option<String>,
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) choices: Vec<ChoiceWire>,
    pub(crate) usage: Option<UsageWire>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChoiceWire {
    #[serde(default)]
    pub(crate) index: u32,
    pub(crate) message: MessageWire,
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MessageWire {
    pub(crate) content: Option<String>,
    pub(crate) tool_calls: Option<Vec<ToolCallWire>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ToolCallWire {
    id: Option<String>,
    function: FunctionWire,
}

#[derive(Debug, Deserialize)]
struct FunctionWire {
    name: String,
    #[serde(default)]
    arguments: Value,
}

impl ToolCallWire {
    /// The call in Karen's terms; `position` names calls the server left without an id.
    pub(crate) fn into_tool_call(self, position: usize) -> ToolCall {
        ToolCall {
            id: self
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{position}")),
            kind: "function".into(),
            function: FunctionCall {
                name: self.function.name,
                arguments: arguments_text(self.function.arguments),
            },
        }
    }
}

/// Arguments are a JSON-encoded string in OpenAI's API; some servers send the
/// object itself.
fn arguments_text(arguments: Value) -> String {
    match arguments {
        Value::String(text) => text,
        Value::Null => "{}".into(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct UsageWire {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

impl UsageWire {
    pub(crate) fn reported(self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            reported: true,
        }
    }
}

/// One `chat.completion.chunk` of a stream (or an error object in its place).
#[derive(Debug, Deserialize)]
pub(crate) struct ChunkWire {
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) choices: Vec<ChunkChoiceWire>,
    pub(crate) usage: Option<UsageWire>,
    pub(crate) error: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChunkChoiceWire {
    #[serde(default)]
    pub(crate) index: u32,
    #[serde(default)]
    pub(crate) delta: DeltaWire,
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeltaWire {
    pub(crate) content: Option<String>,
    tool_calls: Option<Vec<ToolCallDeltaWire>>,
}

#[derive(Debug, Deserialize)]
struct ToolCallDeltaWire {
    #[serde(default)]
    index: u32,
    id: Option<String>,
    function: Option<FunctionDeltaWire>,
}

#[derive(Debug, Deserialize)]
struct FunctionDeltaWire {
    name: Option<String>,
    arguments: Option<Value>,
}

impl DeltaWire {
    pub(crate) fn into_tool_call_deltas(self) -> Vec<ToolCallDelta> {
        self.tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|call| {
                let (name, arguments) = match call.function {
                    Some(function) => (function.name, function.arguments.map(arguments_fragment)),
                    None => (None, None),
                };
                ToolCallDelta {
                    index: call.index,
                    id: call.id,
                    name,
                    arguments: arguments.filter(|text| !text.is_empty()),
                }
            })
            .collect()
    }
}

fn arguments_fragment(arguments: Value) -> String {
    match arguments {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An error object sent in place of a chunk. Its status is the one it names,
/// else 502: the upstream failed after accepting the request.
pub(crate) fn stream_error(error: &Value) -> LlmError {
    let status = ["/code", "/status"]
        .iter()
        .find_map(|pointer| error.pointer(pointer).and_then(Value::as_u64))
        .and_then(|code| u16::try_from(code).ok())
        .filter(|code| (400..600).contains(code))
        .unwrap_or(502);
    let wrapped = serde_json::json!({ "error": error });
    let message = error_message(wrapped.to_string().as_bytes());
    if status == 429 {
        return LlmError::RateLimited { retry_after: None };
    }
    LlmError::Upstream {
        status,
        message: truncate(&message, 300),
    }
}

/// `POST /embeddings`.
#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingsBody<'a> {
    pub(crate) model: &'a str,
    pub(crate) input: &'a [String],
    pub(crate) encoding_format: &'static str,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingsWire {
    data: Vec<EmbeddingWire>,
    pub(crate) model: Option<String>,
    pub(crate) usage: Option<EmbeddingUsageWire>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingWire {
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct EmbeddingUsageWire {
    #[serde(default)]
    pub(crate) prompt_tokens: u32,
}

impl EmbeddingsWire {
    /// The vectors in input order (by their `index`, else their position),
    /// checking there is exactly one per input.
    pub(crate) fn vectors_in_order(&mut self, inputs: usize) -> Result<Vec<Vec<f32>>, LlmError> {
        let data = std::mem::take(&mut self.data);
        if data.len() != inputs {
            return Err(LlmError::InvalidResponse(format!(
                "{} embeddings for {inputs} inputs",
                data.len()
            )));
        }
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; inputs];
        for (position, item) in data.into_iter().enumerate() {
            let index = item.index.unwrap_or(position);
            match slots.get_mut(index) {
                Some(slot @ None) => *slot = Some(item.embedding),
                _ => {
                    return Err(LlmError::InvalidResponse(format!(
                        "embedding index {index} is out of range or repeated"
                    )));
                }
            }
        }
        Ok(slots.into_iter().flatten().collect())
    }
}

/// `GET /models`.
#[derive(Debug, Deserialize)]
pub(crate) struct ModelsWire {
    pub(crate) data: Vec<ModelWire>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ModelWire {
    pub(crate) id: String,
}
