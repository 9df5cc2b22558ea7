//! Anthropic Messages API shapes, and the mapping from Karen's
//! OpenAI-shaped requests (system messages, tool calls, tool results, tool
//! definitions) to them.

use karen_domain::ports::{ChatMessage, ChatRequest, ChatRole, LlmError, TokenUsage};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Anthropic requires `max_tokens`; this is used when the request has none.
pub(crate) const DEFAULT_MAX_TOKENS: u32 = 1024;

/// `POST /v1/messages`.
#[derive(Debug, Serialize)]
pub(crate) struct MessagesBody {
    model: String,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Serialize)]
struct WireMessage {
    role: &'static str,
    content: Vec<Value>,
}

/// Maps `request` to a Messages body: system messages go to the top-level
/// `system`; tool results become `tool_result` blocks of a user turn;
/// consecutive turns of one role merge, because Anthropic expects all the
/// results of one assistant turn's tool calls in the single user turn after it.
pub(crate) fn messages_body(request: &ChatRequest, stream: bool) -> Result<MessagesBody, LlmError> {
    let mut system = Vec::new();
    let mut messages: Vec<WireMessage> = Vec::new();
    for message in &request.messages {
        let text = message
            .content
            .as_deref()
            .filter(|text| !text.trim().is_empty());
        let (role, blocks) = match message.role {
            ChatRole::System => {
                system.extend(text.map(str::to_owned));
                continue;
            }
            ChatRole::User => ("user", text.map(text_block).into_iter().collect()),
            ChatRole::Assistant => ("assistant", assistant_blocks(message, text)?),
            ChatRole::Tool => ("user", vec![tool_result_block(message)?]),
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(WireMessage {
                role,
                content: blocks,
            }),
        }
    }
    if messages.is_empty() {
        return Err(LlmError::Refused(
            "Anthropic needs at least one user or assistant message".into(),
        ));
    }
    Ok(MessagesBody {
        model: request.model.clone(),
        max_tokens: request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        temperature: request.temperature,
        stop_sequences: request.stop.clone().filter(|stop| !stop.is_empty()),
        tools: request.tools.as_ref().map(tools).transpose()?,
        tool_choice: request.tool_choice.as_ref().map(tool_choice).transpose()?,
        metadata: request.user.as_ref().map(|user| json!({ "user_id": user })),
        stream,
    })
}

fn text_block(text: &str) -> Value {
    json!({ "type": "text", "text": text })
}

fn assistant_blocks(message: &ChatMessage, text: Option<&str>) -> Result<Vec<Value>, LlmError> {
    let mut blocks: Vec<Value> = text.map(text_block).into_iter().collect();
    for call in &message.tool_calls {
        let arguments = call.function.arguments.trim();
        let input: Value = if arguments.is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments).map_err(|_| {
                LlmError::Refused(format!(
                    "the arguments of tool call '{}' are not valid JSON",
                    call.id
                ))
            })?
        };
        if !input.is_object() {
            return Err(LlmError::Refused(format!(
                "the arguments of tool call '{}' are not a JSON object",
                call.id
            )));
        }
        blocks.push(json!({
            "type": "tool_use",
            "id": call.id,
            "name": call.function.name,
            "input": input,
        }));
    }
    Ok(blocks)
}

fn tool_result_block(message: &ChatMessage) -> Result<Value, LlmError> {
    let id = message.tool_call_id.as_deref().ok_or_else(|| {
        LlmError::Refused("a tool message does not say which tool call it answers".into())
    })?;
    Ok(json!({
        "type": "tool_result",
        "tool_use_id": id,
        "content": message.content.clone().unwrap_or_default(),
    }))
}

/// OpenAI `[{type: function, function: {name, description, parameters}}]`
/// to Anthropic `[{name, description, input_schema}]`. Definitions already in
/// Anthropic's shape pass through.
fn tools(value: &Value) -> Result<Vec<Value>, LlmError> {
    let invalid =
        || LlmError::Refused("tools must be a list of OpenAI-format function definitions".into());
    let list = value.as_array().ok_or_else(invalid)?;
    list.iter()
        .map(|tool| {
            if tool.get("input_schema").is_some() {
                return Ok(tool.clone());
            }
            let function = tool.get("function").ok_or_else(invalid)?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(invalid)?;
            let mut mapped = json!({
                "name": name,
                "input_schema": function
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
            });
            if let Some(description) = function.get("description") {
                mapped["description"] = description.clone();
            }
            Ok(mapped)
        })
        .collect()
}

/// OpenAI tool choice to Anthropic's: `auto`, `none`, `required` → `any`,
/// a named function → `tool`.
fn tool_choice(value: &Value) -> Result<Value, LlmError> {
    match value {
        Value::String(choice) => match choice.as_str() {
            "auto" => Ok(json!({ "type": "auto" })),
            "none" => Ok(json!({ "type": "none" })),
            "required" => Ok(json!({ "type": "any" })),
            other => Err(LlmError::Refused(format!("unknown tool_choice '{other}'"))),
        },
        Value::Object(object) => {
            if let Some(name) = value.pointer("/function/name").and_then(Value::as_str) {
                return Ok(json!({ "type": "tool", "name": name }));
            }
            match object.get("type").and_then(Value::as_str) {
                Some("auto" | "any" | "tool" | "none") => Ok(value.clone()),
                _ => Err(LlmError::Refused("tool_choice names no function".into())),
            }
        }
        _ => Err(LlmError::Refused(
            "tool_choice must be a string or an object".into(),
        )),
    }
}

/// A whole Messages response.
#[derive(Debug, Deserialize)]
pub(crate) struct MessageWire {
    pub(crate) id: Option<String>,
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) content: Vec<BlockWire>,
    pub(crate) stop_reason: Option<String>,
    pub(crate) usage: Option<UsageWire>,
}

/// A content block; kinds Karen does not use (thinking…) are skipped.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockWire {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(crate) struct UsageWire {
    pub(crate) input_tokens: Option<u32>,
    pub(crate) output_tokens: Option<u32>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u32>,
    #[serde(default)]
    cache_read_input_tokens: Option<u32>,
}

impl UsageWire {
    /// All prompt tokens, cached or not: they were all read.
    pub(crate) fn prompt_tokens(&self) -> Option<u32> {
        self.input_tokens.map(|input| {
            input
                .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
                .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
        })
    }

    pub(crate) fn reported(&self) -> Option<TokenUsage> {
        Some(TokenUsage {
            prompt_tokens: self.prompt_tokens()?,
            completion_tokens: self.output_tokens?,
            reported: true,
        })
    }
}

/// Anthropic's stop reasons in OpenAI's terms.
pub(crate) fn finish_reason(stop_reason: &str) -> String {
    match stop_reason {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_owned()
}

/// One event of a streamed Messages response.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum StreamEventWire {
    MessageStart {
        message: StartMessageWire,
    },
    ContentBlockStart {
        index: u32,
        content_block: StartBlockWire,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDeltaWire,
    },
    MessageDelta {
        delta: MessageDeltaWire,
        #[serde(default)]
        usage: Option<UsageWire>,
    },
    MessageStop,
    Error {
        error: Value,
    },
    /// `ping`, `content_block_stop` and event types added later.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StartMessageWire {
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) usage: Option<UsageWire>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum StartBlockWire {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockDeltaWire {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MessageDeltaWire {
    pub(crate) stop_reason: Option<String>,
}

/// An error object (of an `error` event or an error body) as an [`LlmError`],
/// with the HTTP status Anthropic documents for its type.
pub(crate) fn api_error(error: &Value) -> LlmError {
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or(kind)
        .to_owned();
    let status = match kind {
        "rate_limit_error" => return LlmError::RateLimited { retry_after: None },
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "api_error" => 500,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 502,
    };
    LlmError::Upstream {
        status,
        message: crate::http::truncate(&message, 300),
    }
}
