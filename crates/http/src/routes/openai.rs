//! The OpenAI-compatible API, so that the official `openai` SDKs work with only
//! `base_url` and `api_key` changed: `POST /v1/chat/completions` (whole and
//! streamed, tools passed through, `n = 1`), `POST /v1/embeddings`
//! (`openai_embeddings.rs`) and `GET /v1/models`. Errors on these routes use
//! OpenAI's error shape (see [`openai_error_shape`]).

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use karen_app::assistant::{GatewayAnswer, GatewayEvent, GatewayRequest};
use karen_domain::Error;
use karen_domain::ports::{ChatEvent, ChatMessage, ChatRole, TokenUsage, ToolCall};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::views::{CitationView, citation_views};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, Authorized, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat_completions))
        .routes(routes!(list_models))
        .merge(super::openai_embeddings::routes())
        .layer(axum::middleware::map_response(openai_error_shape))
}

/// `stream_options` of a request.
#[derive(Deserialize, ToSchema)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// One message, as OpenAI's API takes it.
#[derive(Deserialize, ToSchema)]
pub(crate) struct OpenAiMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    role: String,
    /// A string, or an array of content parts (only `text` parts are supported).
    #[schema(value_type = Object)]
    content: Option<Value>,
    name: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    tool_calls: Option<Vec<ToolCall>>,
    tool_call_id: Option<String>,
}

/// A chat completion request (OpenAI's schema; other fields are accepted and ignored).
#[derive(Deserialize, ToSchema)]
pub(crate) struct ChatCompletionRequest {
    /// A model id or alias from `GET /v1/models`.
    model: String,
    messages: Vec<OpenAiMessage>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    /// Passed through to the provider untouched.
    #[schema(value_type = Option<Object>)]
    tools: Option<Value>,
    /// Passed through to the provider untouched.
    #[schema(value_type = Option<Object>)]
    tool_choice: Option<Value>,
    /// A string or an array of strings.
    #[schema(value_type = Option<Object>)]
    stop: Option<Value>,
    /// Only 1 is supported.
    n: Option<u32>,
    user: Option<String>,
}

fn invalid(field: String, message: impl Into<String>) -> Error {
    Error::invalid(Some(&field), message)
}

fn role(text: &str, index: usize) -> Result<ChatRole, Error> {
    match text {
        "system" | "developer" => Ok(ChatRole::System),
        "user" => Ok(ChatRole::User),
        "assistant" => Ok(ChatRole::Assistant),
        "tool" => Ok(ChatRole::Tool),
        other => Err(invalid(
            format!("messages[{index}].role"),
            format!("unknown role '{other}'"),
        )),
    }
}

fn text_of(content: Option<Value>, index: usize) -> Result<Option<String>, Error> {
    match content {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(piece)) => text.push_str(piece),
                    (kind, _) => {
                        return Err(invalid(
                            format!("messages[{index}].content"),
                            format!(
                                "content parts of type '{}' are not supported; send text",
                                kind.unwrap_or("?")
                            ),
                        ));
                    }
                }
            }
            Ok(Some(text))
        }
        Some(_) => Err(invalid(
            format!("messages[{index}].content"),
            "content must be a string or an array of parts",
        )),
    }
}

impl ChatCompletionRequest {
    fn into_gateway(self) -> Result<(GatewayRequest, bool, bool), Error> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(invalid("n".into(), "only n = 1 is supported"));
        }
        let stop = match self.stop {
            None | Some(Value::Null) => None,
            Some(Value::String(one)) => Some(vec![one]),
            Some(Value::Array(many)) => Some(
                many.into_iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| invalid("stop".into(), "stop must be strings"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => {
                return Err(invalid(
                    "stop".into(),
                    "stop must be a string or an array of strings",
                ));
            }
        };
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                Ok(ChatMessage {
                    role: role(&m.role, i)?,
                    content: text_of(m.content, i)?,
                    tool_calls: m.tool_calls.unwrap_or_default(),
                    tool_call_id: m.tool_call_id,
                    name: m.name,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let include_usage = self.stream_options.is_some_and(|o| o.include_usage);
        let request = GatewayRequest {
            model: self.model,
            messages,
            temperature: self.temperature,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            tools: self.tools,
            tool_choice: self.tool_choice,
            stop,
            user: self.user,
        };
        Ok((request, self.stream, include_usage))
    }
}

/// Token counts, OpenAI style.
#[derive(Serialize, ToSchema)]
pub(crate) struct CompletionUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<TokenUsage> for CompletionUsage {
    fn from(u: TokenUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
        }
    }
}

/// A chat completion (OpenAI's `chat.completion` object).
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatCompletion {
    id: String,
    /// Always `chat.completion`.
    object: &'static str,
    created: i64,
    model: String,
    #[schema(value_type = Vec<Object>)]
    choices: Vec<Value>,
    usage: Option<CompletionUsage>,
    /// Karen's addition, only for credentials with `chat:recall`: the
    /// memories and passages recall gave the model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    citations: Vec<CitationView>,
}

fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::now_v7().simple())
}

fn now_unix(state: &AppState) -> i64 {
    state.services.clock().now().unix_timestamp()
}

fn completion(answer: GatewayAnswer, created: i64) -> ChatCompletion {
    let response = answer.response;
    let mut message =
        json!({"role": "assistant", "content": response.message.content, "refusal": null});
    if !response.message.tool_calls.is_empty() {
        message["tool_calls"] = json!(response.message.tool_calls);
    }
    ChatCompletion {
        id: completion_id(),
        object: "chat.completion",
        created,
        model: response.model,
        choices: vec![json!({
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": response.finish_reason.unwrap_or_else(|| "stop".into()),
        })],
        usage: response.usage.map(Into::into),
        citations: citation_views(answer.citations),
    }
}

/// Creates a model response for the conversation given (OpenAI-compatible).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatCompletionRequest,
    security(("bearer" = ["chat:write"])),
    responses((status = 200, body = ChatCompletion, description = "the completion, or with stream: true an OpenAI-style event stream of chat.completion.chunk objects ending in [DONE]"),
        (status = 502, description = "every model provider failed")))]
async fn chat_completions(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatWrite>,
    ApiJson(body): ApiJson<ChatCompletionRequest>,
) -> ApiResult<Response> {
    let (request, stream, include_usage) = body.into_gateway()?;
    let gateway = &state.services.assistant.gateway;
    let created = now_unix(&state);
    if !stream {
        let response = gateway.complete(&auth.ctx, request).await?;
        return Ok(Json(completion(response, created)).into_response());
    }
    let (model, receiver) = gateway.stream(&auth.ctx, request).await?;
    let chunks = ChunkWriter {
        id: completion_id(),
        created,
        model,
        include_usage,
        started: false,
    };
    let events = futures::stream::unfold(
        (receiver, chunks, false),
        |(mut receiver, mut chunks, done)| async move {
            if done {
                return None;
            }
            match receiver.recv().await {
                Some(event) => {
                    let frames: Vec<Result<Event, Infallible>> =
                        chunks.frames(event).into_iter().map(Ok).collect();
                    Some((futures::stream::iter(frames), (receiver, chunks, false)))
                }
                None => Some((
                    futures::stream::iter(vec![Ok(Event::default().data("[DONE]"))]),
                    (receiver, chunks, true),
                )),
            }
        },
    );
    use futures::StreamExt as _;
    Ok(Sse::new(events.flatten())
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Turns gateway events into `chat.completion.chunk` frames.
struct ChunkWriter {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    started: bool,
}

impl ChunkWriter {
    fn chunk(&self, delta: Value, finish_reason: Option<String>) -> Event {
        let body = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        Event::default().data(body.to_string())
    }

    fn frames(&mut self, event: GatewayEvent) -> Vec<Event> {
        let mut frames = Vec::new();
        if !self.started {
            self.started = true;
            frames.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        match event {
            GatewayEvent::Chat(ChatEvent::Delta {
                content,
                tool_calls,
            }) => {
                let mut delta = json!({});
                if let Some(content) = content {
                    delta["content"] = json!(content);
                }
                if !tool_calls.is_empty() {
                    let calls: Vec<Value> = tool_calls
                        .into_iter()
                        .map(|c| {
                            let mut call = json!({"index": c.index, "function": {}});
                            if let Some(id) = c.id {
                                call["id"] = json!(id);
                                call["type"] = json!("function");
                            }
                            if let Some(name) = c.name {
                                call["function"]["name"] = json!(name);
                            }
                            call["function"]["arguments"] = json!(c.arguments.unwrap_or_default());
                            call
                        })
                        .collect();
                    delta["tool_calls"] = json!(calls);
                }
                frames.push(self.chunk(delta, None));
            }
            GatewayEvent::Chat(ChatEvent::Finish { finish_reason, .. }) => {
                frames.push(self.chunk(
                    json!({}),
                    Some(finish_reason.unwrap_or_else(|| "stop".into())),
                ));
            }
            GatewayEvent::Usage(usage) if self.include_usage => {
                let body = json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [], "usage": CompletionUsage::from(usage),
                });
                frames.push(Event::default().data(body.to_string()));
            }
            GatewayEvent::Usage(_) => {}
            GatewayEvent::Citations(citations) => {
                let body = json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [], "citations": citation_views(citations),
                });
                frames.push(Event::default().data(body.to_string()));
            }
            GatewayEvent::Failed(message) => {
                let body = json!({"error": {"message": message, "type": "api_error", "param": null, "code": "upstream_error"}});
                frames.push(Event::default().data(body.to_string()));
            }
        }
        frames
    }
}

/// The model list, OpenAI style.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelList {
    /// Always `list`.
    object: &'static str,
    #[schema(value_type = Vec<Object>)]
    data: Vec<Value>,
}

/// Lists the models this credential may use: chat models and aliases (with
/// `chat:write`), then embedding models (with `embeddings:create`).
#[utoipa::path(get, path = "/v1/models", tag = "openai", security(("bearer" = ["chat:write"]), ("bearer" = ["embeddings:create"])),
    responses((status = 200, body = ModelList)))]
async fn list_models(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
) -> ApiResult<Json<ModelList>> {
    let models = state.services.assistant.openai_models(&auth.ctx).await?;
    let data = models
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "karen"}))
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

/// OpenAI's error type for a status.
fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Rewrites problem documents into OpenAI's `{"error": {message, type, param, code}}`
/// (same status and headers), which the OpenAI SDKs turn into their error classes.
async fn openai_error_shape(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // OpenAI answers a request it cannot accept with 400 where Karen's other
    // routes say 422: the SDKs raise `BadRequestError` for it.
    if parts.status == StatusCode::UNPROCESSABLE_ENTITY {
        parts.status = StatusCode::BAD_REQUEST;
    }
    let problem: Value = match to_bytes(body, 64 * 1024).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    // OpenAI calls an unknown model a mistake in the request, whatever its status.
    let kind = if problem["code"] == "model_not_found" {
        "invalid_request_error"
    } else {
        openai_error_type(parts.status.as_u16())
    };
    let shaped = json!({"error": {
        "message": problem["detail"],
        "type": kind,
        "param": problem["field"],
        "code": problem["code"],
    }});
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(shaped.to_string()))
}
