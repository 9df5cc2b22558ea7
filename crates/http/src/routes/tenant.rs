//! The caller's own tenant.

use axum::Json;
use axum::extract::State;
use karen_app::tenants::ProfileChanges;
use karen_domain::library::{EmbeddingJob, EmbeddingJobState};
use karen_domain::mfa::MfaRequirement;
use karen_domain::tenant::TenantSettings;
use karen_domain::values::RoleName;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::views::{SettingsView, TenantView};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, Authorized, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_tenant, update_tenant))
        .routes(routes!(get_index_state))
}

/// Your tenant's profile and settings.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant", security(("bearer" = ["tenant:read"])),
    responses((status = 200, body = TenantView)))]
async fn get_tenant(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantRead>,
) -> ApiResult<Json<TenantView>> {
    Ok(Json(state.services.tenants.own(&auth.ctx).await?.into()))
}

/// Changes; absent fields stay as they are. `settings` replaces all settings.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateTenantBody {
    name: Option<String>,
    settings: Option<SettingsView>,
}

/// Changes your tenant's name or settings.
#[utoipa::path(patch, path = "/v1/tenant", tag = "tenant", request_body = UpdateTenantBody, security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = TenantView)))]
async fn update_tenant(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiJson(body): ApiJson<UpdateTenantBody>,
) -> ApiResult<Json<TenantView>> {
    let settings = body
        .settings
        .map(|s| {
            Ok::<_, karen_domain::Error>(TenantSettings {
                default_role: RoleName::parse(&s.default_role)?,
                allowed_email_domains: s.allowed_email_domains,
                embedding_model: s.embedding_model,
                memory_extraction: s.memory_extraction,
                mfa_required: MfaRequirement::parse(&s.mfa_required)?,
                sso_required: s.sso_required,
            })
        })
        .transpose()?;
    let changes = ProfileChanges {
        name: body.name,
        settings,
    };
    Ok(Json(
        state
            .services
            .tenants
            .update_own(&auth.ctx, changes)
            .await?
            .into(),
    ))
}

/// A re-embedding job: the tenant's vectors moving to another embedding model.
#[derive(Serialize, ToSchema)]
pub(crate) struct EmbeddingJobView {
    id: Uuid,
    /// The model searches use until the job is done.
    from_model: String,
    /// The model everything is re-embedded with.
    to_model: String,
    /// pending, running, done, failed or cancelled.
    state: String,
    /// Memories and document passages to re-embed (0 until the job starts).
    total: u64,
    /// Of those, how many are done.
    done: u64,
    /// done / total, 0 to 1 (1 when there is nothing to do and the job is done).
    progress: f64,
    /// The new model's vector length, once known.
    dims: Option<u32>,
    attempts: u32,
    /// Why the last attempt failed.
    last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    finished_at: Option<OffsetDateTime>,
}

impl From<EmbeddingJob> for EmbeddingJobView {
    fn from(job: EmbeddingJob) -> Self {
        let progress = if job.total > 0 {
            (job.done as f64 / job.total as f64).min(1.0)
        } else if job.state == EmbeddingJobState::Done {
            1.0
        } else {
            0.0
        };
        Self {
            id: job.id,
            from_model: job.from_model,
            to_model: job.to_model,
            state: job.state.as_str().into(),
            total: job.total,
            done: job.done,
            progress,
            dims: job.dims,
            attempts: job.attempts,
            last_error: job.last_error,
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
        }
    }
}

/// The tenant's search indexes: the embedding model its searches use, and
/// its newest re-embedding job.
#[derive(Serialize, ToSchema)]
pub(crate) struct IndexStateView {
    /// The embedding model the tenant's searches use now.
    embedding_model: String,
    /// Its vectors' length (null if the model cannot be reached to learn it).
    dimensions: Option<u32>,
    /// What `settings.embedding_model` asks for (null: the platform default).
    requested_model: Option<String>,
    /// The embedding models this server offers, the default first.
    offered_models: Vec<String>,
    /// The newest re-embedding job (null if the model never changed).
    job: Option<EmbeddingJobView>,
}

/// Your tenant's embedding model, its dimension, and the state and progress
/// of a change of model.
#[utoipa::path(get, path = "/v1/tenant/index", tag = "tenant", security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = IndexStateView)))]
async fn get_index_state(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
) -> ApiResult<Json<IndexStateView>> {
    let found = state.services.memory.index_state.state(&auth.ctx).await?;
    Ok(Json(IndexStateView {
        embedding_model: found.model,
        dimensions: found.dims,
        requested_model: found.requested_model,
        offered_models: found.offered_models,
        job: found.job.map(Into::into),
    }))
}
