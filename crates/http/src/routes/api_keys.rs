//! API keys of the caller (or, with `apikeys:manage`, of the whole tenant).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_app::Authority;
use karen_app::api_keys::NewApiKey;
use karen_domain::ApiKeyId;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::views::{ApiKeyView, Paged};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, revoke_key))
}

/// Listing options.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyListParams {
    /// Every key of the tenant (needs `apikeys:manage`) instead of your own.
    all: Option<bool>,
    after: Option<String>,
    limit: Option<u32>,
}

/// Lists your API keys (or all, with `all=true`).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(KeyListParams), security(("bearer" = [])),
    responses((status = 200, body = Paged<ApiKeyView>)))]
async fn list_keys(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
    ApiQuery(params): ApiQuery<KeyListParams>,
) -> ApiResult<Json<Paged<ApiKeyView>>> {
    let page = karen_domain::page::PageRequest::parse(params.after.as_deref(), params.limit)?;
    let keys = state
        .services
        .api_keys
        .list(
            Authority::Member(&auth.ctx),
            params.all.unwrap_or(false),
            &page,
        )
        .await?;
    Ok(Json(Paged::from_page(keys, ApiKeyView::from)))
}

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    name: String,
    /// Permission names; all of yours if absent. Never beyond yours.
    #[serde(default, deserialize_with = "super::views::bounded_optional_list")]
    scopes: Option<Vec<String>>,
    /// RFC 3339 time after which the key stops working.
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

/// A created key.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyCreated {
    /// The key itself (`krn_…`): shown only here, store it now.
    key: String,
    api_key: ApiKeyView,
}

/// Creates an API key carrying a subset of your permissions.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateKeyBody, security(("bearer" = ["apikeys:create"])),
    responses((status = 201, body = KeyCreated)))]
async fn create_key(
    State(state): State<AppState>,
    auth: Authorized<perm::ApiKeysCreate>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> ApiResult<(StatusCode, Json<KeyCreated>)> {
    let request = NewApiKey {
        name: body.name,
        scopes: body.scopes,
        expires_at: body.expires_at,
        owner: None,
    };
    let (record, secret) = state
        .services
        .api_keys
        .create(Authority::Member(&auth.ctx), request)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            key: secret.expose_secret().to_owned(),
            api_key: record.into(),
        }),
    ))
}

/// One key (yours, or any with `apikeys:manage`).
#[utoipa::path(get, path = "/v1/api-keys/{key_id}", tag = "api-keys", params(("key_id" = uuid::Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ApiKeyView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such key visible to you")))]
async fn get_key(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
    ApiPath(key_id): ApiPath<String>,
) -> ApiResult<Json<ApiKeyView>> {
    let id: ApiKeyId = path_id(&key_id)?;
    Ok(Json(
        state
            .services
            .api_keys
            .get(Authority::Member(&auth.ctx), id)
            .await?
            .into(),
    ))
}

/// Revokes a key at once (yours, or any with `apikeys:manage`).
#[utoipa::path(delete, path = "/v1/api-keys/{key_id}", tag = "api-keys", params(("key_id" = uuid::Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ApiKeyView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such key visible to you")))]
async fn revoke_key(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
    ApiPath(key_id): ApiPath<String>,
) -> ApiResult<Json<ApiKeyView>> {
    let id: ApiKeyId = path_id(&key_id)?;
    Ok(Json(
        state
            .services
            .api_keys
            .revoke(Authority::Member(&auth.ctx), id)
            .await?
            .into(),
    ))
}
