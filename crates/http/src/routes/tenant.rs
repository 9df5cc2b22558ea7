//! The caller's own tenant.

use axum::Json;
use axum::extract::State;
use karen_app::tenants::ProfileChanges;
use karen_domain::tenant::TenantSettings;
use karen_domain::values::RoleName;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::views::{SettingsView, TenantView};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, Authorized, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_tenant, update_tenant))
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
