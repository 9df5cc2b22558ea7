//! Conversations, their messages, and chat turns (whole or streamed as SSE).

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use karen_app::assistant::{ConversationChanges, TurnEvent, TurnOptions};
use karen_domain::chat::{Conversation, StoredMessage};
use karen_domain::ports::TokenUsage;
use karen_domain::{ConversationId, PersonaId};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::views::{CitationView, PageParams, Paged, citation_views};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_conversations, create_conversation))
        .routes(routes!(
            get_conversation,
            update_conversation,
            delete_conversation
        ))
        .routes(routes!(list_messages, send_message))
}

/// A conversation.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConversationView {
    id: Uuid,
    title: Option<String>,
    persona_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_activity_at: OffsetDateTime,
}

impl From<Conversation> for ConversationView {
    fn from(c: Conversation) -> Self {
        Self {
            id: c.id.as_uuid(),
            title: c.title.map(Into::into),
            persona_id: c.persona_id.map(|p| p.as_uuid()),
            created_at: c.created_at,
            last_activity_at: c.last_activity_at,
        }
    }
}

/// A stored message.
#[derive(Serialize, ToSchema)]
pub(crate) struct MessageView {
    id: Uuid,
    /// `user`, `assistant`, `system` or `tool`.
    role: &'static str,
    content: String,
    /// `complete`, `interrupted` (the client left, or a budget ran out) or `failed`.
    status: &'static str,
    model: Option<String>,
    prompt_tokens: u32,
    completion_tokens: u32,
    /// For answers: the memories and passages recall gave the model.
    citations: Vec<CitationView>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<StoredMessage> for MessageView {
    fn from(m: StoredMessage) -> Self {
        Self {
            id: m.id.as_uuid(),
            role: m.role.as_str(),
            content: m.content,
            status: m.status.as_str(),
            model: m.model,
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            citations: citation_views(m.citations),
            created_at: m.created_at,
        }
    }
}

/// Token counts of a turn.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageView {
    prompt_tokens: u32,
    completion_tokens: u32,
    /// Karen counted them (the provider did not report them).
    counted_locally: bool,
}

impl From<TokenUsage> for UsageView {
    fn from(u: TokenUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            counted_locally: !u.reported,
        }
    }
}

/// Your conversations, most recently active first.
#[utoipa::path(get, path = "/v1/conversations", tag = "assistant", params(PageParams), security(("bearer" = ["chat:read"])),
    responses((status = 200, body = Paged<ConversationView>)))]
async fn list_conversations(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatRead>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Paged<ConversationView>>> {
    let page = state
        .services
        .assistant
        .conversations
        .list(&auth.ctx, params.after.as_deref(), params.limit)
        .await?;
    Ok(Json(Paged {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A conversation to start.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateConversationBody {
    title: Option<String>,
    /// A persona visible to you (tenant-wide or your own).
    persona_id: Option<Uuid>,
}

/// Starts a conversation.
#[utoipa::path(post, path = "/v1/conversations", tag = "assistant", request_body = CreateConversationBody,
    security(("bearer" = ["chat:write"])), responses((status = 201, body = ConversationView)))]
async fn create_conversation(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatWrite>,
    ApiJson(body): ApiJson<CreateConversationBody>,
) -> ApiResult<(StatusCode, Json<ConversationView>)> {
    let persona = body.persona_id.map(PersonaId::from_uuid);
    let conversation = state
        .services
        .assistant
        .conversations
        .create(&auth.ctx, body.title, persona)
        .await?;
    Ok((StatusCode::CREATED, Json(conversation.into())))
}

/// One of your conversations.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}", tag = "assistant",
    params(("conversation_id" = Uuid, Path)), security(("bearer" = ["chat:read"])),
    responses((status = 200, body = ConversationView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such conversation of yours")))]
async fn get_conversation(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatRead>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ConversationView>> {
    let id: ConversationId = path_id(&id)?;
    Ok(Json(
        state
            .services
            .assistant
            .conversations
            .get(&auth.ctx, id)
            .await?
            .into(),
    ))
}

fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Changes; absent fields stay, `null` clears.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateConversationBody {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Uuid>)]
    persona_id: Option<Option<Uuid>>,
}

/// Renames a conversation or changes its persona.
#[utoipa::path(patch, path = "/v1/conversations/{conversation_id}", tag = "assistant",
    params(("conversation_id" = Uuid, Path)), request_body = UpdateConversationBody, security(("bearer" = ["chat:write"])),
    responses((status = 200, body = ConversationView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such conversation of yours")))]
async fn update_conversation(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateConversationBody>,
) -> ApiResult<Json<ConversationView>> {
    let id: ConversationId = path_id(&id)?;
    let changes = ConversationChanges {
        title: body.title,
        persona: body.persona_id.map(|p| p.map(PersonaId::from_uuid)),
    };
    Ok(Json(
        state
            .services
            .assistant
            .conversations
            .update(&auth.ctx, id, changes)
            .await?
            .into(),
    ))
}

/// Deletes a conversation and its messages.
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}", tag = "assistant",
    params(("conversation_id" = Uuid, Path)), security(("bearer" = ["chat:write"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such conversation of yours")))]
async fn delete_conversation(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatWrite>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: ConversationId = path_id(&id)?;
    state
        .services
        .assistant
        .conversations
        .delete(&auth.ctx, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A conversation's messages, oldest first.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/messages", tag = "assistant",
    params(("conversation_id" = Uuid, Path), PageParams), security(("bearer" = ["chat:read"])),
    responses((status = 200, body = Paged<MessageView>),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such conversation of yours")))]
async fn list_messages(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatRead>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Paged<MessageView>>> {
    let id: ConversationId = path_id(&id)?;
    let page = state
        .services
        .assistant
        .conversations
        .messages(&auth.ctx, id, &params.request()?)
        .await?;
    Ok(Json(Paged::from_page(page, MessageView::from)))
}

/// A message to the assistant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendBody {
    content: String,
    /// Stream the answer as server-sent events (`delta`, then `done` or `error`).
    #[serde(default)]
    stream: bool,
    /// Use this model (or alias) instead of the persona's or the default.
    model: Option<String>,
}

/// A whole answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct TurnView {
    user_message: MessageView,
    message: MessageView,
    usage: UsageView,
    finish_reason: Option<String>,
}

/// Sends a message and gets the answer, whole or streamed. A streamed answer
/// whose client disconnects is cancelled upstream and stored as `interrupted`.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/messages", tag = "assistant",
    params(("conversation_id" = Uuid, Path)), request_body = SendBody, security(("bearer" = ["chat:write"])),
    responses((status = 200, body = TurnView, description = "the whole answer (or, with stream: true, text/event-stream events delta, done, error)"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such conversation of yours"),
        (status = 502, body = crate::error::Problem, content_type = "application/problem+json", description = "every model provider failed")))]
async fn send_message(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SendBody>,
) -> ApiResult<Response> {
    let id: ConversationId = path_id(&id)?;
    let options = TurnOptions { model: body.model };
    let chat = &state.services.assistant.chat;
    if !body.stream {
        let turn = chat.send(&auth.ctx, id, &body.content, options).await?;
        let view = TurnView {
            user_message: turn.user_message.into(),
            message: turn.answer.into(),
            usage: turn.usage.into(),
            finish_reason: turn.finish_reason,
        };
        return Ok(Json(view).into_response());
    }
    let receiver = chat.stream(&auth.ctx, id, &body.content, options).await?;
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<Event, Infallible>(sse_event(event)), receiver))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn sse_event(event: TurnEvent) -> Event {
    let (name, data) = match event {
        TurnEvent::Delta(content) => ("delta", serde_json::json!({ "content": content })),
        TurnEvent::Done {
            message_id,
            usage,
            finish_reason,
            model,
            citations,
        } => (
            "done",
            serde_json::json!({
                "message_id": message_id.as_uuid(),
                "usage": UsageView::from(usage),
                "finish_reason": finish_reason,
                "model": model,
                "citations": citation_views(citations),
            }),
        ),
        TurnEvent::Failed { message_id, error } => (
            "error",
            serde_json::json!({ "message_id": message_id.as_uuid(), "code": "upstream_error", "detail": error }),
        ),
    };
    Event::default().event(name).data(data.to_string())
}
