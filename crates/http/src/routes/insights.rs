//! Insights: the operator's report (this process and every tenant) and a
//! tenant's report (its own usage only; see `karen_app::insights`).

use axum::Json;
use axum::extract::State;
use karen_app::insights::InsightReport;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Authorized, Operator, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(platform_insights))
        .routes(routes!(tenant_insights))
}

/// The period a report covers.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowParams {
    /// Minutes or hours ending now, e.g. `15m` or `1h`; at most (and by
    /// default) `metrics.insights_window_minutes`.
    window: Option<String>,
}

/// This process's slowest routes, slow queries, cache hit ratios, provider
/// latency and errors and rejections, every tenant's spending by model, and
/// recommendations drawn from them (each naming its numbers).
#[utoipa::path(get, path = "/v1/admin/insights", tag = "platform", params(WindowParams), security(("operator" = [])),
    responses((status = 200, description = "the insight report (docs/api.md describes its fields)", content_type = "application/json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "the window is not like 15m or 1h, or longer than kept")))]
async fn platform_insights(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiQuery(params): ApiQuery<WindowParams>,
) -> ApiResult<Json<InsightReport>> {
    Ok(Json(
        state
            .services
            .insights
            .platform(&operator, params.window.as_deref())
            .await?,
    ))
}

/// Your tenant's spending, calls, errors and latency by model, and the
/// recommendations drawn from them. Process-wide numbers (which mix every
/// tenant's traffic) are not part of it.
#[utoipa::path(get, path = "/v1/tenant/insights", tag = "tenant", params(WindowParams), security(("bearer" = ["usage:read"])),
    responses((status = 200, description = "the insight report, `process` null (docs/api.md describes its fields)", content_type = "application/json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "the window is not like 15m or 1h, or longer than kept")))]
async fn tenant_insights(
    State(state): State<AppState>,
    auth: Authorized<perm::UsageRead>,
    ApiQuery(params): ApiQuery<WindowParams>,
) -> ApiResult<Json<InsightReport>> {
    Ok(Json(
        state
            .services
            .insights
            .tenant(&auth.ctx, params.window.as_deref())
            .await?,
    ))
}
