//! Data subject requests over the API: everything Karen holds about one
//! user, as one JSON document to download (GDPR articles 15 and 20).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use karen_app::privacy::UserExport;
use karen_domain::UserId;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::AuditEventView;
use super::conversations::{ConversationView, MessageView};
use super::memory::{ChunkView, DocumentView, MemoryView};
use super::usage::UsageRecordView;
use super::views::{ApiKeyView, UserView};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiPath, Authorized, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export_user))
}

#[derive(Serialize)]
struct ConversationExport {
    conversation: ConversationView,
    messages: Vec<MessageView>,
}

#[derive(Serialize)]
struct DocumentExport {
    document: DocumentView,
    passages: Vec<ChunkView>,
}

#[derive(Serialize)]
struct UserExportView {
    /// `karen-user-export/1`.
    format: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    exported_at: OffsetDateTime,
    tenant_id: String,
    user: UserView,
    api_keys: Vec<ApiKeyView>,
    conversations: Vec<ConversationExport>,
    memories: Vec<MemoryView>,
    documents: Vec<DocumentExport>,
    usage: Vec<UsageRecordView>,
    audit_events: Vec<AuditEventView>,
}

/// An export as its JSON document (also what `karen user export` writes).
pub fn user_export_json(export: UserExport, exported_at: OffsetDateTime) -> serde_json::Value {
    let view = UserExportView {
        format: "karen-user-export/1",
        exported_at,
        tenant_id: export.user.tenant_id.to_string(),
        user: export.user.into(),
        api_keys: export.api_keys.into_iter().map(Into::into).collect(),
        conversations: export
            .conversations
            .into_iter()
            .map(|(conversation, messages)| ConversationExport {
                conversation: conversation.into(),
                messages: messages.into_iter().map(Into::into).collect(),
            })
            .collect(),
        memories: export.memories.into_iter().map(Into::into).collect(),
        documents: export
            .documents
            .into_iter()
            .map(|(document, chunks)| DocumentExport {
                document: document.into(),
                passages: chunks.into_iter().map(Into::into).collect(),
            })
            .collect(),
        usage: export.usage.into_iter().map(Into::into).collect(),
        audit_events: export.audit.into_iter().map(Into::into).collect(),
    };
    serde_json::to_value(view).unwrap_or_default()
}

/// Everything Karen holds about a user — profile, API keys (never secrets),
/// conversations with messages, private memories, uploaded documents with
/// their text, usage, and the audit events they caused — as a JSON file.
/// Your own, or anyone's with `users:manage`; recorded as `user.export`.
#[utoipa::path(get, path = "/v1/users/{user_id}/export", tag = "users", params(("user_id" = uuid::Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, description = "application/json attachment: the user's data")))]
async fn export_user(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<Response> {
    let id: UserId = path_id(&user_id)?;
    let export = state.services.privacy.export_user(&auth.ctx, id).await?;
    let now = state.services.clock().now();
    let mut response = axum::Json(user_export_json(export, now)).into_response();
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"karen-user-{id}.json\""))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
