//! Rate limits: the platform operator reads and sets a tenant's overrides;
//! a tenant's members with `tenant:read` see the limits that apply to them.
//!
//! Overrides are the operator's alone: limits protect the platform and the
//! model providers every tenant shares, and a plan is what a tenant pays
//! for, so a tenant admin raising their own would defeat both.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_domain::rate_limit::{Quota, RateLimits};
use karen_domain::{Error, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Authorized, Operator, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_overrides, put_overrides, delete_overrides))
        .routes(routes!(own_limits))
}

/// `requests` per `window_secs` seconds (bursts of up to `requests`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaView {
    /// 1–1,000,000.
    requests: u32,
    /// 1–86,400.
    window_secs: u32,
}

/// Quotas by scope; an absent (or null) scope has no quota at this level.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsView {
    /// All requests of the tenant together.
    tenant: Option<QuotaView>,
    /// Each user's requests made with a session.
    user: Option<QuotaView>,
    /// Each API key's requests.
    api_key: Option<QuotaView>,
}

impl From<RateLimits> for LimitsView {
    fn from(limits: RateLimits) -> Self {
        let view = |quota: Option<Quota>| {
            quota.map(|q| QuotaView {
                requests: q.requests(),
                window_secs: q.window_secs(),
            })
        };
        Self {
            tenant: view(limits.tenant),
            user: view(limits.user),
            api_key: view(limits.api_key),
        }
    }
}

impl LimitsView {
    fn into_limits(self) -> Result<RateLimits, Error> {
        let quota = |name: &str, view: Option<QuotaView>| {
            view.map(|v| Quota::new(v.requests, v.window_secs))
                .transpose()
                .map_err(|e| match e {
                    Error::Invalid {
                        field: Some(field),
                        message,
                    } => Error::Invalid {
                        field: Some(format!("{name}.{field}")),
                        message,
                    },
                    other => other,
                })
        };
        Ok(RateLimits {
            tenant: quota("tenant", self.tenant)?,
            user: quota("user", self.user)?,
            api_key: quota("api_key", self.api_key)?,
        })
    }
}

/// A tenant's overrides and the limits in effect (defaults ← plan ← overrides).
#[derive(Serialize, ToSchema)]
pub(crate) struct TenantRateLimits {
    overrides: LimitsView,
    effective: LimitsView,
}

async fn tenant_limits(state: &AppState, id: TenantId) -> ApiResult<Json<TenantRateLimits>> {
    let overrides = state.services.rate_limits.overrides(id).await?;
    let effective = state.services.rate_limits.effective(id).await?;
    Ok(Json(TenantRateLimits {
        overrides: overrides.into(),
        effective: effective.into(),
    }))
}

/// A tenant's rate-limit overrides and effective limits.
#[utoipa::path(get, path = "/v1/platform/tenants/{tenant_id}/rate-limits", tag = "platform", params(("tenant_id" = uuid::Uuid, Path)),
    security(("operator" = [])),
    responses((status = 200, body = TenantRateLimits),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such tenant")))]
async fn get_overrides(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TenantRateLimits>> {
    tenant_limits(&state, path_id(&id)?).await
}

/// Replaces a tenant's overrides (scopes left out follow the plan); takes
/// effect on every replica with the next request.
#[utoipa::path(put, path = "/v1/platform/tenants/{tenant_id}/rate-limits", tag = "platform", params(("tenant_id" = uuid::Uuid, Path)),
    request_body = LimitsView, security(("operator" = [])),
    responses((status = 200, body = TenantRateLimits),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such tenant"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "a quota out of range")))]
async fn put_overrides(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<LimitsView>,
) -> ApiResult<Json<TenantRateLimits>> {
    let id: TenantId = path_id(&id)?;
    state
        .services
        .rate_limits
        .set_overrides(operator.actor(), id, body.into_limits()?)
        .await?;
    tenant_limits(&state, id).await
}

/// Removes a tenant's overrides: its plan's limits apply again.
#[utoipa::path(delete, path = "/v1/platform/tenants/{tenant_id}/rate-limits", tag = "platform", params(("tenant_id" = uuid::Uuid, Path)),
    security(("operator" = [])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such tenant")))]
async fn delete_overrides(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: TenantId = path_id(&id)?;
    state
        .services
        .rate_limits
        .set_overrides(operator.actor(), id, RateLimits::default())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The rate limits that apply to the caller's organisation.
#[utoipa::path(get, path = "/v1/tenant/rate-limits", tag = "tenant", security(("bearer" = ["tenant:read"])),
    responses((status = 200, body = LimitsView)))]
async fn own_limits(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantRead>,
) -> ApiResult<Json<LimitsView>> {
    let limits = state
        .services
        .rate_limits
        .effective(auth.ctx.tenant_id())
        .await?;
    Ok(Json(limits.into()))
}
