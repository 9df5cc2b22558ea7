//! The Anthropic Messages API client: whole and streamed completions with
//! tool use, answering in the same vendor-neutral terms as the
//! OpenAI-compatible client.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use eventsource_stream::Event;
use karen_domain::ports::{
    ChatEvent, ChatMessage, ChatProvider, ChatRequest, ChatResponse, ChatRole, ChatStream,
    FunctionCall, LlmError, TokenUsage, ToolCall, ToolCallDelta,
};
use karen_domain::{Clock, SystemClock};
use reqwest::header::HeaderValue;
use reqwest::{RequestBuilder, Response};
use secrecy::{ExposeSecret, SecretString};

use crate::Timeouts;
use crate::anthropic_wire::{
    BlockDeltaWire, BlockWire, MessageWire, MessagesBody, StartBlockWire, StreamEventWire,
    api_error, finish_reason, messages_body,
};
use crate::http::{read_json, status_error, transport_error, with_trace_context};
use crate::policy::Endpoint;
use crate::sse::{Decoded, SseDecoder, chat_stream, parse_data};
use crate::tokens::{estimate_prompt_tokens, estimate_tokens};

/// The API version Karen speaks (sent as `anthropic-version`).
pub const ANTHROPIC_API_VERSION: &str = "2023-06-01";

/// A chat provider speaking Anthropic's Messages API.
pub struct Anthropic {
    name: String,
    endpoint: Endpoint,
    api_key: SecretString,
    models: Vec<String>,
    client: reqwest::Client,
    timeouts: Timeouts,
    clock: Arc<dyn Clock>,
}

impl Anthropic {
    /// A client for the API at `endpoint` (`https://api.anthropic.com`),
    /// serving the configured `models`; `client` should come from
    /// [`crate::http_client`].
    pub fn new(
        name: impl Into<String>,
        endpoint: Endpoint,
        api_key: SecretString,
        models: Vec<String>,
        client: reqwest::Client,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            name: name.into(),
            endpoint,
            api_key,
            models,
            client,
            timeouts,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` to interpret `Retry-After` dates (the wall clock by default).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn post(&self, body: &MessagesBody) -> Result<RequestBuilder, LlmError> {
        let mut key = HeaderValue::from_str(self.api_key.expose_secret()).map_err(|_| {
            LlmError::Refused(
                "the Anthropic API key contains characters not allowed in a header".into(),
            )
        })?;
        key.set_sensitive(true);
        // Accept a base URL configured with or without the `/v1` segment.
        let path = if self
            .endpoint
            .url()
            .path()
            .trim_end_matches('/')
            .ends_with("/v1")
        {
            "messages"
        } else {
            "v1/messages"
        };
        Ok(self
            .client
            .post(self.endpoint.join(path))
            .header("x-api-key", key)
            .header("anthropic-version", ANTHROPIC_API_VERSION)
            .json(body))
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, LlmError> {
        let response = with_trace_context(request)
            .send()
            .await
            .map_err(transport_error)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(response, self.clock.now(), Some(&self.api_key)).await)
        }
    }
}

impl fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Anthropic")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("api_key", &"[redacted]")
            .field("models", &self.models)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ChatProvider for Anthropic {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let body = messages_body(request, false)?;
        let http = self.post(&body)?.timeout(self.timeouts.request);
        let response = self.send(http).await?;
        let message: MessageWire = read_json(response).await?;
        Ok(into_response(message, request))
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let body = messages_body(request, true)?;
        let http = self.post(&body)?;
        let response = tokio::time::timeout(self.timeouts.request, self.send(http))
            .await
            .map_err(|_elapsed| LlmError::Timeout)??;
        let decoder = AnthropicDecoder {
            requested_model: request.model.clone(),
            prompt_estimate: estimate_prompt_tokens(&request.messages),
            ..AnthropicDecoder::default()
        };
        chat_stream(
            response,
            self.timeouts.stream_idle,
            decoder,
            Some(self.api_key.clone()),
        )
    }

    /// The configured models: Karen does not ask Anthropic for its catalogue.
    async fn models(&self) -> Result<Vec<String>, LlmError> {
        Ok(self.models.clone())
    }
}

/// Text blocks joined, `tool_use` blocks as tool calls (arguments = the JSON
/// of `input`), stop reason and usage in OpenAI's terms.
fn into_response(message: MessageWire, request: &ChatRequest) -> ChatResponse {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            BlockWire::Text { text: part } => text.push_str(&part),
            BlockWire::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: if input.is_null() {
                        "{}".into()
                    } else {
                        input.to_string()
                    },
                },
            }),
            BlockWire::Other => {}
        }
    }
    let generated: String = tool_calls
        .iter()
        .map(|call: &ToolCall| format!(" {} {}", call.function.name, call.function.arguments))
        .fold(text.clone(), |all, part| all + &part);
    let usage = message
        .usage
        .and_then(|usage| usage.reported())
        .unwrap_or_else(|| TokenUsage {
            prompt_tokens: estimate_prompt_tokens(&request.messages),
            completion_tokens: estimate_tokens(&generated),
            reported: false,
        });
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    ChatResponse {
        provider: None,
        id: message.id,
        model: message.model.unwrap_or_else(|| request.model.clone()),
        message: ChatMessage {
            role: ChatRole::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
            name: None,
        },
        finish_reason: message.stop_reason.as_deref().map(finish_reason),
        usage: Some(usage),
    }
}

/// Decodes Messages stream events; `message_stop` ends the stream.
#[derive(Debug, Default)]
struct AnthropicDecoder {
    requested_model: String,
    prompt_estimate: u32,
    model: Option<String>,
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    stop_reason: Option<String>,
    /// Content block index → tool call index (tool calls count from 0).
    tool_indexes: HashMap<u32, u32>,
    generated: String,
}

impl AnthropicDecoder {
    fn finish(&mut self) -> ChatEvent {
        let usage = match (self.input_tokens, self.output_tokens) {
            (Some(prompt_tokens), Some(completion_tokens)) => TokenUsage {
                prompt_tokens,
                completion_tokens,
                reported: true,
            },
            _ => TokenUsage {
                prompt_tokens: self.prompt_estimate,
                completion_tokens: estimate_tokens(&self.generated),
                reported: false,
            },
        };
        ChatEvent::Finish {
            provider: None,
            finish_reason: self.stop_reason.as_deref().map(finish_reason),
            usage: Some(usage),
            model: Some(
                self.model
                    .take()
                    .unwrap_or_else(|| self.requested_model.clone()),
            ),
        }
    }

    fn delta(&mut self, content: Option<String>, tool_call: Option<ToolCallDelta>) -> Decoded {
        for part in content.iter().chain(
            tool_call
                .iter()
                .flat_map(|call| call.name.iter().chain(call.arguments.iter())),
        ) {
            self.generated.push_str(part);
            self.generated.push(' ');
        }
        Decoded {
            events: vec![ChatEvent::Delta {
                content,
                tool_calls: tool_call.into_iter().collect(),
            }],
            finished: false,
        }
    }
}

impl SseDecoder for AnthropicDecoder {
    fn decode(&mut self, event: &Event) -> Result<Decoded, LlmError> {
        let decoded: StreamEventWire = parse_data(event)?;
        match decoded {
            StreamEventWire::MessageStart { message } => {
                self.model = message.model;
                if let Some(usage) = message.usage {
                    self.input_tokens = usage.prompt_tokens();
                    self.output_tokens = usage.output_tokens.filter(|tokens| *tokens > 0);
                }
            }
            StreamEventWire::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                StartBlockWire::Text { text } if !text.is_empty() => {
                    return Ok(self.delta(Some(text), None));
                }
                StartBlockWire::ToolUse { id, name } => {
                    let tool_index = u32::try_from(self.tool_indexes.len()).unwrap_or(u32::MAX);
                    self.tool_indexes.insert(index, tool_index);
                    let call = ToolCallDelta {
                        index: tool_index,
                        id: Some(id),
                        name: Some(name),
                        arguments: None,
                    };
                    return Ok(self.delta(None, Some(call)));
                }
                StartBlockWire::Text { .. } | StartBlockWire::Other => {}
            },
            StreamEventWire::ContentBlockDelta { index, delta } => match delta {
                BlockDeltaWire::TextDelta { text } if !text.is_empty() => {
                    return Ok(self.delta(Some(text), None));
                }
                BlockDeltaWire::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    let tool_index = self.tool_indexes.get(&index).copied().ok_or_else(|| {
                        LlmError::InvalidResponse(format!(
                            "tool input for content block {index}, which is not a tool call"
                        ))
                    })?;
                    let call = ToolCallDelta {
                        index: tool_index,
                        id: None,
                        name: None,
                        arguments: Some(partial_json),
                    };
                    return Ok(self.delta(None, Some(call)));
                }
                _ => {}
            },
            StreamEventWire::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                if let Some(output) = usage.and_then(|usage| usage.output_tokens) {
                    self.output_tokens = Some(output);
                }
            }
            StreamEventWire::MessageStop => {
                return Ok(Decoded {
                    events: vec![self.finish()],
                    finished: true,
                });
            }
            StreamEventWire::Error { error } => return Err(api_error(&error)),
            StreamEventWire::Other => {}
        }
        Ok(Decoded::default())
    }

    fn end_of_body(&mut self) -> Result<Vec<ChatEvent>, LlmError> {
        if self.stop_reason.is_some() {
            return Ok(vec![self.finish()]);
        }
        Err(LlmError::Connection(
            "the stream ended before the message was complete".into(),
        ))
    }
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
