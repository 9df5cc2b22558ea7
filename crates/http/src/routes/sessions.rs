//! The caller's own sessions: list them, end one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_domain::SessionId;
use karen_domain::credentials::ActiveSession;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiPath, Authorized, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(end_session))
}

/// One live session (a login on one device).
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionView {
    id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// The login, or the last exchange of its refresh token.
    #[serde(with = "time::serde::rfc3339")]
    last_used_at: OffsetDateTime,
    /// When it ends at the latest (`auth.session_ttl_days` after login); it
    /// ends earlier when unused for `auth.session_idle_timeout_hours`.
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    /// The address the login came from.
    ip: Option<String>,
    /// The login's `User-Agent` (at most 300 characters).
    user_agent: Option<String>,
    /// Whether this is the session of the access token making the request.
    current: bool,
}

/// The caller's live sessions, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionList {
    sessions: Vec<SessionView>,
}

fn view(active: ActiveSession, current: Option<SessionId>) -> SessionView {
    let session = active.session;
    SessionView {
        id: session.id.as_uuid(),
        created_at: session.created_at,
        last_used_at: active.last_used_at,
        expires_at: session.expires_at,
        ip: session.ip,
        user_agent: session.user_agent,
        current: current == Some(session.id),
    }
}

/// Lists your own live sessions (at most 200, newest first).
#[utoipa::path(get, path = "/v1/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SessionList)))]
async fn list_sessions(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
) -> ApiResult<Json<SessionList>> {
    let (sessions, current) = state.services.auth.list_sessions(&auth.ctx).await?;
    Ok(Json(SessionList {
        sessions: sessions.into_iter().map(|s| view(s, current)).collect(),
    }))
}

/// Ends one of your own sessions (its refresh token and access tokens stop working).
#[utoipa::path(delete, path = "/v1/auth/sessions/{session_id}", tag = "auth", params(("session_id" = uuid::Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such live session of yours")))]
async fn end_session(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
    ApiPath(session_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: SessionId = path_id(&session_id)?;
    state.services.auth.end_session(&auth.ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
