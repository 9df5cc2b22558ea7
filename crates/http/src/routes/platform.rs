//! Tenant lifecycle for the platform operator (operator keys only; no tenant
//! role grants any of this).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_app::tenants::{NewTenant, TenantChanges};
use karen_domain::TenantId;
use karen_domain::user::Password;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::TenantCreated;
use super::views::{PageParams, Paged, TenantView};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Operator, path_id};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant, update_tenant, delete_tenant))
        .routes(routes!(suspend_tenant))
        .routes(routes!(resume_tenant))
}

/// Lists tenants, oldest first.
#[utoipa::path(get, path = "/v1/platform/tenants", tag = "platform", params(PageParams), security(("operator" = [])),
    responses((status = 200, body = Paged<TenantView>)))]
async fn list_tenants(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Paged<TenantView>>> {
    let page = state.services.tenants.list(&params.request()?).await?;
    Ok(Json(Paged::from_page(page, TenantView::from)))
}

/// Value types name themselves; the body names the owner's fields.
const OWNER_FIELDS: &[(&str, &str)] = &[
    ("email", "owner_email"),
    ("display_name", "owner_name"),
    ("password", "owner_password"),
];

/// A tenant to create, with its owner.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenantBody {
    /// 3–63 of a-z, 0-9 and '-', starting with a letter.
    slug: String,
    name: String,
    /// Defaults to `free`.
    plan: Option<String>,
    owner_email: String,
    owner_name: Option<String>,
    /// At least 12 characters. If absent, the owner has no usable password
    /// until they set one with the returned `password_setup` token.
    owner_password: Option<String>,
}

/// Creates a tenant and its owner, and provisions it in every store.
#[utoipa::path(post, path = "/v1/platform/tenants", tag = "platform", request_body = CreateTenantBody, security(("operator" = [])),
    responses((status = 201, body = TenantCreated),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "the slug is taken")))]
async fn create_tenant(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiJson(body): ApiJson<CreateTenantBody>,
) -> ApiResult<(StatusCode, Json<TenantCreated>)> {
    let created = state
        .services
        .tenants
        .create(
            operator.actor(),
            NewTenant {
                slug: body.slug,
                name: body.name,
                plan: body.plan,
                owner_email: body.owner_email,
                owner_name: body.owner_name,
                owner_password: body
                    .owner_password
                    .as_deref()
                    .map(Password::parse)
                    .transpose()
                    .map_err(|e| ApiError::rename_field(e, OWNER_FIELDS))?,
            },
        )
        .await
        .map_err(|e| ApiError::rename_field(e, OWNER_FIELDS))?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// One tenant.
#[utoipa::path(get, path = "/v1/platform/tenants/{tenant_id}", tag = "platform", params(("tenant_id" = uuid::Uuid, Path)),
    security(("operator" = [])),
    responses((status = 200, body = TenantView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such tenant")))]
async fn get_tenant(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TenantView>> {
    let id: TenantId = path_id(&id)?;
    Ok(Json(state.services.tenants.get(id).await?.into()))
}

/// Changes; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateTenantBody {
    name: Option<String>,
    plan: Option<String>,
}

/// Changes a tenant's name or plan.
#[utoipa::path(patch, path = "/v1/platform/tenants/{tenant_id}", tag = "platform", params(("tenant_id" = uuid::Uuid, Path)),
    request_body = UpdateTenantBody, security(("operator" = [])),
    responses((status = 200, body = TenantView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such tenant")))]
async fn update_tenant(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateTenantBody>,
) -> ApiResult<Json<TenantView>> {
    let id: TenantId = path_id(&id)?;
    let changes = TenantChanges {
        name: body.name,
        plan: body.plan,
    };
    Ok(Json(
        state
            .services
            .tenants
            .update(operator.actor(), id, changes)
            .await?
            .into(),
    ))
}

/// Suspends a tenant: its users and keys are refused until it is resumed.
#[utoipa::path(post, path = "/v1/platform/tenants/{tenant_id}/suspend", tag = "platform", params(("tenant_id" = uuid::Uuid, Path)),
    security(("operator" = [])),
    responses((status = 200, body = TenantView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such tenant")))]
async fn suspend_tenant(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TenantView>> {
    let id: TenantId = path_id(&id)?;
    Ok(Json(
        state
            .services
            .tenants
            .suspend(operator.actor(), id)
            .await?
            .into(),
    ))
}

/// Resumes a suspended tenant.
#[utoipa::path(post, path = "/v1/platform/tenants/{tenant_id}/resume", tag = "platform", params(("tenant_id" = uuid::Uuid, Path)),
    security(("operator" = [])),
    responses((status = 200, body = TenantView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such tenant")))]
async fn resume_tenant(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TenantView>> {
    let id: TenantId = path_id(&id)?;
    Ok(Json(
        state
            .services
            .tenants
            .resume(operator.actor(), id)
            .await?
            .into(),
    ))
}

/// What a deletion removed.
#[derive(Serialize, ToSchema)]
pub(crate) struct Deleted {
    tenant_id: uuid::Uuid,
    /// Rows deleted per table.
    rows: std::collections::BTreeMap<String, u64>,
    /// Other stores the tenant was removed from.
    stores: Vec<&'static str>,
}

/// Deletes a tenant and all its data from every store. Irreversible.
#[utoipa::path(delete, path = "/v1/platform/tenants/{tenant_id}", tag = "platform", params(("tenant_id" = uuid::Uuid, Path)),
    security(("operator" = [])),
    responses((status = 200, body = Deleted),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such tenant")))]
async fn delete_tenant(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    let id: TenantId = path_id(&id)?;
    let report = state.services.tenants.delete(operator.actor(), id).await?;
    Ok(Json(Deleted {
        tenant_id: report.tenant_id.as_uuid(),
        rows: report
            .rows
            .rows_by_table
            .into_iter()
            .map(|(t, n)| (t.to_owned(), n))
            .collect(),
        stores: report.namespaces,
    }))
}
