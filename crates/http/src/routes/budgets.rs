//! Budgets: hard and soft limits on tokens or cost, per day or month, for the
//! tenant, a user or an API key.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_app::assistant::{BudgetStatus, NewBudget};
use karen_domain::BudgetId;
use karen_domain::budget::Budget;
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
        .routes(routes!(list_budgets, create_budget))
        .routes(routes!(delete_budget))
}

/// A budget.
#[derive(Serialize, ToSchema)]
pub(crate) struct BudgetView {
    id: Uuid,
    /// `tenant`, `user` or `api_key`.
    scope: &'static str,
    subject_id: Option<Uuid>,
    /// `tokens` or `cost_micros`.
    metric: &'static str,
    /// `day` or `month` (UTC calendar periods).
    period: &'static str,
    limit: i64,
    /// `hard` (refuses and cuts off) or `soft` (only reported).
    enforcement: &'static str,
    /// Used in the current period (usage records plus calls in flight).
    #[serde(skip_serializing_if = "Option::is_none")]
    used: Option<i64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    resets_at: Option<OffsetDateTime>,
}

fn view(budget: Budget, used: Option<i64>, resets_at: Option<OffsetDateTime>) -> BudgetView {
    BudgetView {
        id: budget.id.as_uuid(),
        scope: budget.scope.kind(),
        subject_id: budget.scope.subject(),
        metric: budget.metric.as_str(),
        period: budget.period.as_str(),
        limit: budget.limit,
        enforcement: budget.enforcement.as_str(),
        used,
        resets_at,
    }
}

impl From<BudgetStatus> for BudgetView {
    fn from(status: BudgetStatus) -> Self {
        view(status.budget, Some(status.used), Some(status.resets_at))
    }
}

/// The tenant's budgets with what each has used this period.
#[utoipa::path(get, path = "/v1/budgets", tag = "assistant", security(("bearer" = ["usage:read"])),
    responses((status = 200, body = Vec<BudgetView>)))]
async fn list_budgets(
    State(state): State<AppState>,
    auth: Authorized<perm::UsageRead>,
) -> ApiResult<Json<Vec<BudgetView>>> {
    let statuses = state.services.assistant.budgets.list(&auth.ctx).await?;
    Ok(Json(statuses.into_iter().map(Into::into).collect()))
}

/// A budget to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBudgetBody {
    /// `tenant`, `user` or `api_key`.
    scope: String,
    /// The user or API key (for those scopes).
    subject_id: Option<Uuid>,
    /// `tokens` or `cost_micros`.
    metric: String,
    /// `day` or `month`.
    period: String,
    limit: i64,
    /// `hard` or `soft`.
    enforcement: String,
}

/// Creates a budget.
#[utoipa::path(post, path = "/v1/budgets", tag = "assistant", request_body = CreateBudgetBody,
    security(("bearer" = ["billing:manage"])), responses((status = 201, body = BudgetView)))]
async fn create_budget(
    State(state): State<AppState>,
    auth: Authorized<perm::BillingManage>,
    ApiJson(body): ApiJson<CreateBudgetBody>,
) -> ApiResult<(StatusCode, Json<BudgetView>)> {
    let input = NewBudget {
        scope: body.scope,
        subject_id: body.subject_id,
        metric: body.metric,
        period: body.period,
        limit: body.limit,
        enforcement: body.enforcement,
    };
    let budget = state
        .services
        .assistant
        .budgets
        .create(&auth.ctx, input)
        .await?;
    Ok((StatusCode::CREATED, Json(view(budget, None, None))))
}

/// Deletes a budget.
#[utoipa::path(delete, path = "/v1/budgets/{budget_id}", tag = "assistant", params(("budget_id" = Uuid, Path)),
    security(("bearer" = ["billing:manage"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such budget")))]
async fn delete_budget(
    State(state): State<AppState>,
    auth: Authorized<perm::BillingManage>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: BudgetId = path_id(&id)?;
    state
        .services
        .assistant
        .budgets
        .delete(&auth.ctx, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
