//! The tenant's metered provider calls.

use axum::Json;
use axum::extract::State;
use karen_app::assistant::UsageQuery;
use karen_domain::chat::UsageRecord;
use karen_domain::page::PageRequest;
use karen_domain::ports::UsageFilter;
use karen_domain::{ApiKeyId, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Authorized, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_usage))
}

/// Filters; all optional.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageParams {
    /// RFC 3339; records at or after.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    from: Option<OffsetDateTime>,
    /// RFC 3339; records before.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    until: Option<OffsetDateTime>,
    user_id: Option<Uuid>,
    api_key_id: Option<Uuid>,
    model: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

/// One metered call.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageRecordView {
    id: Uuid,
    user_id: Option<Uuid>,
    api_key_id: Option<Uuid>,
    conversation_id: Option<Uuid>,
    provider: String,
    model: String,
    prompt_tokens: u32,
    completion_tokens: u32,
    counted_locally: bool,
    latency_ms: u32,
    /// `ok`, `error`, `interrupted` or `budget_cut`.
    status: &'static str,
    /// In millionths of the configured currency unit.
    cost_micros: i64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<UsageRecord> for UsageRecordView {
    fn from(r: UsageRecord) -> Self {
        Self {
            id: r.id.as_uuid(),
            user_id: r.user_id.map(|u| u.as_uuid()),
            api_key_id: r.api_key_id.map(|k| k.as_uuid()),
            conversation_id: r.conversation_id.map(|c| c.as_uuid()),
            provider: r.provider,
            model: r.model,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            counted_locally: r.counted_locally,
            latency_ms: r.latency_ms,
            status: r.status.as_str(),
            cost_micros: r.cost_micros,
            created_at: r.created_at,
        }
    }
}

/// Sums over every matching record.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageTotalsView {
    calls: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_micros: i64,
}

/// Matching records (one page, oldest first) and totals over all of them.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageReport {
    items: Vec<UsageRecordView>,
    next_cursor: Option<String>,
    totals: UsageTotalsView,
}

/// Your tenant's usage, filterable by period, user, key and model.
#[utoipa::path(get, path = "/v1/usage", tag = "assistant", params(UsageParams), security(("bearer" = ["usage:read"])),
    responses((status = 200, body = UsageReport)))]
async fn list_usage(
    State(state): State<AppState>,
    auth: Authorized<perm::UsageRead>,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> ApiResult<Json<UsageReport>> {
    let query = UsageQuery {
        filter: UsageFilter {
            from: params.from,
            until: params.until,
            user: params.user_id.map(UserId::from_uuid),
            api_key: params.api_key_id.map(ApiKeyId::from_uuid),
            model: params.model,
        },
        page: PageRequest::parse(params.after.as_deref(), params.limit)?,
    };
    let (page, totals) = state
        .services
        .assistant
        .usage
        .query(&auth.ctx, &query)
        .await?;
    Ok(Json(UsageReport {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
        totals: UsageTotalsView {
            calls: totals.calls,
            prompt_tokens: totals.prompt_tokens,
            completion_tokens: totals.completion_tokens,
            cost_micros: totals.cost_micros,
        },
    }))
}
