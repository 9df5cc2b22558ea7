//! The OpenAI-compatible client: one implementation for OpenAI itself and the
//! servers that speak its API (vLLM, llama.cpp server, Ollama's `/v1`,
//! LiteLLM…). Chat completions whole or streamed, tool calls, model listing
//! and embeddings.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use eventsource_stream::Event;
use karen_domain::ports::{
    ChatEvent, ChatMessage, ChatProvider, ChatRequest, ChatResponse, ChatRole, ChatStream,
    LlmError, TokenUsage,
};
use karen_domain::{Clock, SystemClock};
use reqwest::{RequestBuilder, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::Timeouts;
use crate::http::{read_json, status_error, transport_error, with_trace_context};
use crate::openai_wire::{
    ChatBody, ChunkWire, CompletionWire, ModelsWire, StreamOptions, stream_error,
};
use crate::policy::Endpoint;
use crate::sse::{Decoded, SseDecoder, chat_stream, parse_data};
use crate::tokens::{estimate_prompt_tokens, estimate_tokens, estimated_usage};

/// A chat and embedding provider speaking the OpenAI HTTP API.
pub struct OpenAiCompatible {
    name: String,
    endpoint: Endpoint,
    api_key: Option<SecretString>,
    client: reqwest::Client,
    timeouts: Timeouts,
    clock: Arc<dyn Clock>,
    /// The most inputs sent in one `/embeddings` call.
    embedding_batch_size: usize,
}

impl OpenAiCompatible {
    /// A client for the API at `endpoint` (e.g. `https://api.openai.com/v1`
    /// or `http://localhost:11434/v1`); `client` should come from
    /// [`crate::http_client`] so that the outbound policy applies.
    pub fn new(
        name: impl Into<String>,
        endpoint: Endpoint,
        api_key: Option<SecretString>,
        client: reqwest::Client,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            name: name.into(),
            endpoint,
            api_key,
            client,
            timeouts,
            clock: Arc::new(SystemClock),
            embedding_batch_size: DEFAULT_EMBEDDING_BATCH_SIZE,
        }
    }

    /// Sends at most `size` inputs (at least 1) per `/embeddings` call;
    /// [`DEFAULT_EMBEDDING_BATCH_SIZE`] unless set.
    pub fn with_embedding_batch_size(mut self, size: usize) -> Self {
        self.embedding_batch_size = size.max(1);
        self
    }

    /// Uses `clock` to interpret `Retry-After` dates (the wall clock by default).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A request to `path` under the base URL. The key only ever goes to the
    /// configured endpoint: URLs are built from it alone and redirects are
    /// not followed.
    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, self.endpoint.join(path));
        match &self.api_key {
            Some(key) => request.bearer_auth(key.expose_secret()),
            None => request,
        }
    }

    fn post_json(&self, path: &str, body: &impl Serialize) -> RequestBuilder {
        self.request(reqwest::Method::POST, path).json(body)
    }

    /// Sends and turns error statuses into errors.
    async fn send(&self, request: RequestBuilder) -> Result<Response, LlmError> {
        let response = with_trace_context(request)
            .send()
            .await
            .map_err(transport_error)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(response, self.clock.now(), self.api_key.as_ref()).await)
        }
    }
}

impl fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatible")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeouts", &self.timeouts)
            .field("embedding_batch_size", &self.embedding_batch_size)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ChatProvider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let body = ChatBody::new(request, false);
        let http = self
            .post_json("chat/completions", &body)
            .timeout(self.timeouts.request);
        let response = self.send(http).await?;
        let completion: CompletionWire = read_json(response).await?;
        completion.into_response(request)
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let mut body = ChatBody::new(request, true);
        body.stream_options = Some(StreamOptions {
            include_usage: true,
        });
        // No overall timeout on a stream (a long answer may take minutes): the
        // request timeout covers the wait for headers, the idle timeout each gap.
        let http = self.post_json("chat/completions", &body);
        let response = tokio::time::timeout(self.timeouts.request, self.send(http))
            .await
            .map_err(|_elapsed| LlmError::Timeout)??;
        let decoder = OpenAiDecoder {
            requested_model: request.model.clone(),
            prompt_estimate: estimate_prompt_tokens(&request.messages),
            ..OpenAiDecoder::default()
        };
        chat_stream(
            response,
            self.timeouts.stream_idle,
            decoder,
            self.api_key.clone(),
        )
    }

    async fn models(&self) -> Result<Vec<String>, LlmError> {
        let http = self
            .request(reqwest::Method::GET, "models")
            .timeout(self.timeouts.request);
        let response = self.send(http).await?;
        let models: ModelsWire = read_json(response).await?;
        Ok(models.data.into_iter().map(|model| model.id).collect())
    }
}

impl CompletionWire {
    /// The first choice as a [`ChatResponse`]; usage is counted locally when
    /// the upstream did not report it.
    fn into_response(self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let choice = self
            .choices
            .into_iter()
            .min_by_key(|choice| choice.index)
            .ok_or_else(|| LlmError::InvalidResponse("the completion has no choices".into()))?;
        let tool_calls: Vec<_> = choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(position, call)| call.into_tool_call(position))
            .collect();
        let message = ChatMessage {
            role: ChatRole::Assistant,
            content: choice.message.content,
            tool_calls,
            tool_call_id: None,
            name: None,
        };
        let usage = match self.usage {
            Some(usage) => usage.reported(),
            None => estimated_usage(&request.messages, &generated_text(&message)),
        };
        Ok(ChatResponse {
            provider: None,
            id: self.id,
            model: self.model.unwrap_or_else(|| request.model.clone()),
            message,
            finish_reason: choice.finish_reason,
            usage: Some(usage),
        })
    }
}

/// The text a completion generated (content and tool calls), for local counts.
fn generated_text(message: &ChatMessage) -> String {
    let mut text = message.content.clone().unwrap_or_default();
    for call in &message.tool_calls {
        text.push(' ');
        text.push_str(&call.function.name);
        text.push(' ');
        text.push_str(&call.function.arguments);
    }
    text
}

/// Decodes `chat.completion.chunk` events; `data: [DONE]` ends the stream.
#[derive(Debug, Default)]
struct OpenAiDecoder {
    requested_model: String,
    prompt_estimate: u32,
    model: Option<String>,
    finish_reason: Option<String>,
    usage: Option<TokenUsage>,
    /// Everything generated so far, to count it when no usage is reported.
    generated: String,
}

impl OpenAiDecoder {
    fn finish(&mut self) -> ChatEvent {
        let usage = self.usage.unwrap_or(TokenUsage {
            prompt_tokens: self.prompt_estimate,
            completion_tokens: estimate_tokens(&self.generated),
            reported: false,
        });
        ChatEvent::Finish {
            provider: None,
            finish_reason: self.finish_reason.take(),
            usage: Some(usage),
            model: Some(
                self.model
                    .take()
                    .unwrap_or_else(|| self.requested_model.clone()),
            ),
        }
    }
}

impl SseDecoder for OpenAiDecoder {
    fn decode(&mut self, event: &Event) -> Result<Decoded, LlmError> {
        if event.data.trim() == "[DONE]" {
            return Ok(Decoded {
                events: vec![self.finish()],
                finished: true,
            });
        }
        let chunk: ChunkWire = parse_data(event)?;
        if let Some(error) = chunk.error {
            return Err(stream_error(&error));
        }
        if let Some(model) = chunk.model.filter(|model| !model.is_empty()) {
            self.model = Some(model);
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.reported());
        }
        let mut events = Vec::new();
        // Karen never asks for several choices (`n`); only the first is read.
        for choice in chunk.choices.into_iter().filter(|choice| choice.index == 0) {
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
            let mut delta = choice.delta;
            let content = delta.content.take().filter(|text| !text.is_empty());
            let tool_calls = delta.into_tool_call_deltas();
            if let Some(text) = &content {
                self.generated.push_str(text);
            }
            for call in &tool_calls {
                for part in [&call.name, &call.arguments].into_iter().flatten() {
                    self.generated.push(' ');
                    self.generated.push_str(part);
                }
            }
            if content.is_some() || !tool_calls.is_empty() {
                events.push(ChatEvent::Delta {
                    content,
                    tool_calls,
                });
            }
        }
        Ok(Decoded {
            events,
            finished: false,
        })
    }

    fn end_of_body(&mut self) -> Result<Vec<ChatEvent>, LlmError> {
        // Some servers close without `[DONE]`; a stated finish reason is
        // enough to know the answer is whole.
        if self.finish_reason.is_some() {
            return Ok(vec![self.finish()]);
        }
        Err(LlmError::Connection(
            "the stream ended before the completion finished".into(),
        ))
    }
}

#[path = "openai_embeddings.rs"]
mod embeddings;

pub use embeddings::DEFAULT_EMBEDDING_BATCH_SIZE;

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;
