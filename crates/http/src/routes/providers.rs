//! The tenant's own model providers and model aliases (credentials are write-only).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_app::assistant::ProviderInput;
use karen_domain::ProviderId;
use karen_domain::providers::{ModelAlias, TenantProvider};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Authorized, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(update_provider, delete_provider))
        .routes(routes!(list_aliases))
        .routes(routes!(put_alias, delete_alias))
}

/// A provider (its credential is never shown).
#[derive(Serialize, ToSchema)]
pub(crate) struct ProviderView {
    id: Uuid,
    name: String,
    /// `openai` (any OpenAI-compatible server) or `anthropic`.
    kind: String,
    base_url: String,
    /// Whether a credential is stored.
    has_api_key: bool,
    models: Vec<String>,
    /// Lower positions are tried first, before the platform's providers.
    position: i32,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<TenantProvider> for ProviderView {
    fn from(p: TenantProvider) -> Self {
        Self {
            id: p.id.as_uuid(),
            has_api_key: p.api_key.is_some(),
            name: p.name,
            kind: p.kind,
            base_url: p.base_url,
            models: p.models,
            position: p.position,
            updated_at: p.updated_at,
        }
    }
}

/// A provider to add, or changes (absent fields stay; `api_key: null` removes it).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderBody {
    name: Option<String>,
    kind: Option<String>,
    base_url: Option<String>,
    #[serde(default, deserialize_with = "super::views::bounded_credential")]
    #[schema(value_type = Option<String>)]
    api_key: Option<Option<String>>,
    models: Option<Vec<String>>,
    position: Option<i32>,
}

impl From<ProviderBody> for ProviderInput {
    fn from(b: ProviderBody) -> Self {
        Self {
            name: b.name,
            kind: b.kind,
            base_url: b.base_url,
            api_key: b.api_key,
            models: b.models,
            position: b.position,
        }
    }
}

/// The tenant's model providers.
#[utoipa::path(get, path = "/v1/providers", tag = "assistant", security(("bearer" = ["tenant:read"])),
    responses((status = 200, body = Vec<ProviderView>)))]
async fn list_providers(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantRead>,
) -> ApiResult<Json<Vec<ProviderView>>> {
    let providers = state.services.assistant.providers.list(&auth.ctx).await?;
    Ok(Json(providers.into_iter().map(Into::into).collect()))
}

/// Adds a model provider; its URL must pass the outbound (SSRF) policy.
#[utoipa::path(post, path = "/v1/providers", tag = "assistant", request_body = ProviderBody,
    security(("bearer" = ["tenant:manage"])),
    responses((status = 201, body = ProviderView),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "the name is taken")))]
async fn create_provider(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiJson(body): ApiJson<ProviderBody>,
) -> ApiResult<(StatusCode, Json<ProviderView>)> {
    let provider = state
        .services
        .assistant
        .providers
        .create(&auth.ctx, body.into())
        .await?;
    Ok((StatusCode::CREATED, Json(provider.into())))
}

/// Changes a model provider.
#[utoipa::path(patch, path = "/v1/providers/{provider_id}", tag = "assistant", params(("provider_id" = Uuid, Path)),
    request_body = ProviderBody, security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = ProviderView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such provider")))]
async fn update_provider(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ProviderBody>,
) -> ApiResult<Json<ProviderView>> {
    let id: ProviderId = path_id(&id)?;
    Ok(Json(
        state
            .services
            .assistant
            .providers
            .update(&auth.ctx, id, body.into())
            .await?
            .into(),
    ))
}

/// Removes a model provider.
#[utoipa::path(delete, path = "/v1/providers/{provider_id}", tag = "assistant", params(("provider_id" = Uuid, Path)),
    security(("bearer" = ["tenant:manage"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such provider")))]
async fn delete_provider(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: ProviderId = path_id(&id)?;
    state
        .services
        .assistant
        .providers
        .delete(&auth.ctx, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A model alias.
#[derive(Serialize, ToSchema)]
pub(crate) struct AliasView {
    alias: String,
    target: String,
}

impl From<ModelAlias> for AliasView {
    fn from(a: ModelAlias) -> Self {
        Self {
            alias: a.alias,
            target: a.target,
        }
    }
}

/// The tenant's model aliases (the platform's also apply, after these).
#[utoipa::path(get, path = "/v1/model-aliases", tag = "assistant", security(("bearer" = ["tenant:read"])),
    responses((status = 200, body = Vec<AliasView>)))]
async fn list_aliases(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantRead>,
) -> ApiResult<Json<Vec<AliasView>>> {
    let aliases = state
        .services
        .assistant
        .providers
        .aliases(&auth.ctx)
        .await?;
    Ok(Json(aliases.into_iter().map(Into::into).collect()))
}

/// The model an alias stands for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AliasBody {
    target: String,
}

/// Creates or replaces an alias.
#[utoipa::path(put, path = "/v1/model-aliases/{alias}", tag = "assistant", params(("alias" = String, Path)),
    request_body = AliasBody, security(("bearer" = ["tenant:manage"])), responses((status = 200, body = AliasView)))]
async fn put_alias(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiPath(alias): ApiPath<String>,
    ApiJson(body): ApiJson<AliasBody>,
) -> ApiResult<Json<AliasView>> {
    Ok(Json(
        state
            .services
            .assistant
            .providers
            .put_alias(&auth.ctx, &alias, &body.target)
            .await?
            .into(),
    ))
}

/// Removes an alias.
#[utoipa::path(delete, path = "/v1/model-aliases/{alias}", tag = "assistant", params(("alias" = String, Path)),
    security(("bearer" = ["tenant:manage"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such alias")))]
async fn delete_alias(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state
        .services
        .assistant
        .providers
        .delete_alias(&auth.ctx, &alias)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
