//! Data subject requests over the API: everything Karen holds about one
//! user, as one JSON document to download (GDPR articles 15 and 20), and
//! the erasure of a user (article 17).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use karen_app::privacy::{ErasureReport, UploadedDocuments, UserExport};
use karen_domain::{Error, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::AuditEventView;
use super::conversations::{ConversationView, MessageView};
use super::memory::{ChunkView, DocumentView, MemoryView};
use super::usage::UsageRecordView;
use super::views::{ApiKeyView, UserView};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Authorized, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export_user))
        .routes(routes!(erase_user))
}

/// What to erase.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ErasureRequest {
    /// Must be the user's e-mail address, as a guard against erasing the
    /// wrong person (an erasure cannot be undone).
    confirm_email: String,
    /// `delete` (default): the documents the user uploaded go too; `keep`:
    /// they stay for the organisation, no longer naming their uploader.
    #[serde(default)]
    #[schema(pattern = "^(delete|keep)$")]
    documents: Option<String>,
}

/// Longest e-mail address a user can have (RFC 5321 path limit).
const MAX_EMAIL_CHARS: usize = 320;

/// What the erasure removed: counts only.
#[derive(Serialize, ToSchema)]
struct ErasureView {
    /// The pseudonym that now stands for the user in the audit trail.
    pseudonym: String,
    conversations: u64,
    memories: u64,
    documents_deleted: u64,
    search_entries: u64,
    api_keys: u64,
    sessions: u64,
    mfa_rows: u64,
    sso_identities: u64,
    personas: u64,
    budgets: u64,
    usage_records_detached: u64,
    usage_aggregates: u64,
    documents_detached: u64,
    cached_embeddings: u64,
    legal_holds_pseudonymised: u64,
    audit_events_erased: u64,
    audit_fields_erased: u64,
    /// Events from before chain version 2 that name the user and were kept.
    audit_events_kept_legacy: u64,
    /// Whether the deleted bytes are also gone from the search index files
    /// and the database log (false: logged; the next compaction finishes).
    files_compacted: bool,
}

impl From<ErasureReport> for ErasureView {
    fn from(r: ErasureReport) -> Self {
        Self {
            pseudonym: r.pseudonym,
            conversations: r.conversations,
            memories: r.memories,
            documents_deleted: r.documents_deleted,
            search_entries: r.search_entries,
            api_keys: r.rows.api_keys,
            sessions: r.rows.sessions,
            mfa_rows: r.rows.mfa_rows,
            sso_identities: r.rows.sso_identities,
            personas: r.rows.personas,
            budgets: r.rows.budgets,
            usage_records_detached: r.rows.usage_records_detached,
            usage_aggregates: r.rows.usage_aggregates,
            documents_detached: r.rows.documents_detached,
            cached_embeddings: r.rows.cached_embeddings,
            legal_holds_pseudonymised: r.rows.legal_holds_pseudonymised,
            audit_events_erased: r.audit_events_erased,
            audit_fields_erased: r.audit_fields_erased,
            audit_events_kept_legacy: r.audit_events_kept_legacy,
            files_compacted: r.files_compacted,
        }
    }
}

/// Erases a user (GDPR article 17): their conversations, memories, uploaded
/// documents (unless kept), search entries, keys, sessions and MFA are
/// deleted, their usage kept without naming them, and the audit trail keeps
/// its events with the user pseudonymised (the chain still verifies).
/// Needs `users:manage`; refused for one's own account, the last owner, and
/// a user under legal hold. Recorded as `user.erase`. Cannot be undone.
#[utoipa::path(post, path = "/v1/users/{user_id}/erase", tag = "users", params(("user_id" = uuid::Uuid, Path)),
    request_body = ErasureRequest, security(("bearer" = [])),
    responses((status = 200, body = ErasureView),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "own account, last owner, legal hold"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "confirm_email does not match")))]
async fn erase_user(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersManage>,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(body): ApiJson<ErasureRequest>,
) -> ApiResult<axum::Json<ErasureView>> {
    let id: UserId = path_id(&user_id)?;
    // Parsed here rather than by serde, whose message would echo the input.
    let documents = match body.documents.as_deref() {
        Some("keep") => UploadedDocuments::Keep,
        Some("delete") | None => UploadedDocuments::Delete,
        Some(_) => {
            return Err(
                Error::invalid(Some("documents"), "documents must be delete or keep").into(),
            );
        }
    };
    if body.confirm_email.chars().count() > MAX_EMAIL_CHARS {
        return Err(Error::invalid(
            Some("confirm_email"),
            format!("confirm_email is at most {MAX_EMAIL_CHARS} characters"),
        )
        .into());
    }
    let report = state
        .services
        .privacy
        .erase(
            karen_app::Authority::Member(&auth.ctx),
            id,
            Some(&body.confirm_email),
            documents,
        )
        .await?;
    Ok(axum::Json(report.into()))
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
    /// What an identity provider set through SCIM (`null` if none manages the user).
    provisioning: Option<serde_json::Value>,
    sso_identities: Vec<SsoIdentityExport>,
}

/// A linked identity at a single sign-on provider.
#[derive(Serialize)]
struct SsoIdentityExport {
    connection_id: String,
    subject: String,
    #[serde(with = "time::serde::rfc3339")]
    linked_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_login_at: OffsetDateTime,
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
        provisioning: export.provisioning.map(|p| {
            let groups: Vec<&str> = export
                .groups
                .iter()
                .map(|g| g.display_name.as_str())
                .collect();
            serde_json::json!({
                "external_id": p.external_id,
                "given_name": p.given_name,
                "family_name": p.family_name,
                "emails": p.emails,
                "groups": groups,
                "deleted": p.deleted_at.is_some(),
            })
        }),
        sso_identities: export
            .sso_identities
            .into_iter()
            .map(|i| SsoIdentityExport {
                connection_id: i.connection_id.to_string(),
                subject: i.subject,
                linked_at: i.created_at,
                last_login_at: i.last_login_at,
            })
            .collect(),
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
