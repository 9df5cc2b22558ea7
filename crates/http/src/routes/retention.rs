//! Retention and legal hold: a tenant's admins (`tenant:manage`) read and set
//! its retention policy, run the enforcement now, and set and lift legal holds.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_app::retention::{RetentionOverview, RetentionReport};
use karen_domain::LegalHoldId;
use karen_domain::retention::{HoldScope, LegalHold, RetentionCounts, RetentionPolicy};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_retention, put_retention))
        .routes(routes!(run_retention))
        .routes(routes!(list_holds, create_hold))
        .routes(routes!(lift_hold))
}

/// Maximum ages in days (1–36,500); null or absent keeps that kind forever.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PolicyView {
    /// Conversations (with their messages), by last activity.
    conversations_days: Option<u32>,
    /// Memories, by last change.
    memories_days: Option<u32>,
    /// Documents (with their passages and index entries), by last change.
    documents_days: Option<u32>,
    /// Usage records, by time of the call.
    usage_days: Option<u32>,
    /// Audit events; at least the platform's `audit_min_days`.
    audit_days: Option<u32>,
}

impl From<RetentionPolicy> for PolicyView {
    fn from(p: RetentionPolicy) -> Self {
        Self {
            conversations_days: p.conversations_days,
            memories_days: p.memories_days,
            documents_days: p.documents_days,
            usage_days: p.usage_days,
            audit_days: p.audit_days,
        }
    }
}

impl From<PolicyView> for RetentionPolicy {
    fn from(p: PolicyView) -> Self {
        Self {
            conversations_days: p.conversations_days,
            memories_days: p.memories_days,
            documents_days: p.documents_days,
            usage_days: p.usage_days,
            audit_days: p.audit_days,
        }
    }
}

/// How many items of each kind a run deleted (never what they held).
#[derive(Serialize, ToSchema)]
pub(crate) struct CountsView {
    conversations: u64,
    memories: u64,
    documents: u64,
    usage_records: u64,
    audit_events: u64,
    /// Expired items kept because a legal hold covers them.
    held: u64,
}

impl From<RetentionCounts> for CountsView {
    fn from(c: RetentionCounts) -> Self {
        Self {
            conversations: c.conversations,
            memories: c.memories,
            documents: c.documents,
            usage_records: c.usage_records,
            audit_events: c.audit_events,
            held: c.held,
        }
    }
}

/// The newest enforcement run.
#[derive(Serialize, ToSchema)]
pub(crate) struct LastRunView {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    counts: CountsView,
}

/// The tenant's retention policy.
#[derive(Serialize, ToSchema)]
pub(crate) struct RetentionView {
    /// The policy in effect.
    policy: PolicyView,
    /// Whether the organisation set it (otherwise: the platform defaults).
    custom: bool,
    defaults: PolicyView,
    /// The fewest days audit events must be kept.
    audit_min_days: u32,
    last_run: Option<LastRunView>,
}

impl From<RetentionOverview> for RetentionView {
    fn from(o: RetentionOverview) -> Self {
        Self {
            policy: o.policy.into(),
            custom: o.custom,
            defaults: o.defaults.into(),
            audit_min_days: o.audit_min_days,
            last_run: o.last_run.map(|run| LastRunView {
                at: run.at,
                counts: run.counts.into(),
            }),
        }
    }
}

/// The organisation's retention policy and its last enforcement run.
#[utoipa::path(get, path = "/v1/tenant/retention", tag = "tenant", security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = RetentionView)))]
async fn get_retention(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
) -> ApiResult<Json<RetentionView>> {
    let overview = state.services.retention.overview(&auth.ctx).await?;
    Ok(Json(overview.into()))
}

/// Replaces the organisation's retention policy (audited).
#[utoipa::path(put, path = "/v1/tenant/retention", tag = "tenant", request_body = PolicyView,
    security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = RetentionView),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "an age out of range, or audit below the platform minimum")))]
async fn put_retention(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiJson(body): ApiJson<PolicyView>,
) -> ApiResult<Json<RetentionView>> {
    let overview = state
        .services
        .retention
        .set_policy(&auth.ctx, body.into())
        .await?;
    Ok(Json(overview.into()))
}

/// Run options.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunParams {
    /// Count what would be deleted; delete nothing.
    dry_run: Option<bool>,
}

/// What a run deleted (or, dry, would delete).
#[derive(Serialize, ToSchema)]
pub(crate) struct RunView {
    dry_run: bool,
    counts: CountsView,
    /// Why audit events older than the policy were kept, if they were.
    audit_skipped: Option<String>,
}

impl From<RetentionReport> for RunView {
    fn from(r: RetentionReport) -> Self {
        Self {
            dry_run: r.dry_run,
            counts: r.counts.into(),
            audit_skipped: r.audit_skipped,
        }
    }
}

/// Enforces the organisation's retention policy now: deletes what is older
/// than the policy and under no legal hold, and records the counts.
#[utoipa::path(post, path = "/v1/tenant/retention/run", tag = "tenant", params(RunParams),
    security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = RunView)))]
async fn run_retention(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiQuery(params): ApiQuery<RunParams>,
) -> ApiResult<Json<RunView>> {
    let report = state
        .services
        .retention
        .run_for(&auth.ctx, params.dry_run.unwrap_or(false))
        .await?;
    Ok(Json(report.into()))
}

/// A legal hold.
#[derive(Serialize, ToSchema)]
pub(crate) struct HoldView {
    id: Uuid,
    /// `tenant`, `user` or `conversation`.
    scope: &'static str,
    /// The held user or conversation.
    target_id: Option<Uuid>,
    reason: String,
    created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

fn hold_view(hold: LegalHold) -> HoldView {
    HoldView {
        id: hold.id.as_uuid(),
        scope: hold.scope.as_str(),
        target_id: hold.scope.target_id(),
        reason: hold.reason,
        created_by: hold.created_by,
        created_at: hold.created_at,
    }
}

/// A legal hold to place.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewHold {
    /// `tenant` (everything), `user` or `conversation`.
    scope: String,
    /// The user's or conversation's id (absent for `tenant`).
    target_id: Option<String>,
    /// Why (a case or matter reference), 1–500 characters.
    reason: String,
}

/// The organisation's active legal holds.
#[derive(Serialize, ToSchema)]
pub(crate) struct HoldList {
    items: Vec<HoldView>,
}

/// Lists the active legal holds, oldest first.
#[utoipa::path(get, path = "/v1/legal-holds", tag = "tenant", security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = HoldList)))]
async fn list_holds(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
) -> ApiResult<Json<HoldList>> {
    let holds = state.services.retention.holds(&auth.ctx).await?;
    Ok(Json(HoldList {
        items: holds.into_iter().map(hold_view).collect(),
    }))
}

/// Places a legal hold: retention deletes nothing it covers until it is lifted (audited).
#[utoipa::path(post, path = "/v1/legal-holds", tag = "tenant", request_body = NewHold,
    security(("bearer" = ["tenant:manage"])),
    responses((status = 201, body = HoldView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such user or conversation"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "a bad scope, target or reason")))]
async fn create_hold(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiJson(body): ApiJson<NewHold>,
) -> ApiResult<(StatusCode, Json<HoldView>)> {
    let scope = HoldScope::parse(&body.scope, body.target_id.as_deref())?;
    let hold = state
        .services
        .retention
        .set_hold(&auth.ctx, scope, &body.reason)
        .await?;
    Ok((StatusCode::CREATED, Json(hold_view(hold))))
}

/// Lifts a legal hold (audited); the next run may delete what it kept.
#[utoipa::path(delete, path = "/v1/legal-holds/{hold_id}", tag = "tenant", params(("hold_id" = Uuid, Path)),
    security(("bearer" = ["tenant:manage"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such active hold")))]
async fn lift_hold(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: LegalHoldId = path_id(&id)?;
    state.services.retention.lift_hold(&auth.ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
