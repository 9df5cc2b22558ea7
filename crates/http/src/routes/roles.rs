//! Permissions and roles.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_app::Authority;
use karen_app::roles::{RoleInput, RoleView};
use karen_domain::permission::Permission;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Authorized, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_permissions))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(get_role, update_role, delete_role))
}

/// A permission.
#[derive(Serialize, ToSchema)]
pub(crate) struct PermissionInfo {
    name: &'static str,
    description: &'static str,
}

/// Every permission that roles and API keys can hold.
#[utoipa::path(get, path = "/v1/permissions", tag = "roles", security(("bearer" = [])),
    responses((status = 200, body = Vec<PermissionInfo>)))]
async fn list_permissions(_auth: Authorized<perm::Member>) -> Json<Vec<PermissionInfo>> {
    Json(
        Permission::ALL
            .iter()
            .map(|p| PermissionInfo {
                name: p.as_str(),
                description: p.description(),
            })
            .collect(),
    )
}

/// A role.
#[derive(Serialize, ToSchema)]
pub(crate) struct RoleBody {
    name: String,
    description: Option<String>,
    /// Built-in roles cannot be changed or deleted.
    builtin: bool,
    permissions: Vec<String>,
}

impl From<RoleView> for RoleBody {
    fn from(role: RoleView) -> Self {
        Self {
            name: role.name,
            description: role.description,
            builtin: role.builtin,
            permissions: role.permissions.names(),
        }
    }
}

/// The built-in roles, then the tenant's custom roles.
#[utoipa::path(get, path = "/v1/roles", tag = "roles", security(("bearer" = ["users:read"])),
    responses((status = 200, body = Vec<RoleBody>)))]
async fn list_roles(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersRead>,
) -> ApiResult<Json<Vec<RoleBody>>> {
    let roles = state
        .services
        .roles
        .list(Authority::Member(&auth.ctx))
        .await?;
    Ok(Json(roles.into_iter().map(RoleBody::from).collect()))
}

/// A custom role to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRoleBody {
    /// 2–64 of a-z, 0-9, '_' and '-'; not a built-in name.
    name: String,
    description: Option<String>,
    /// Permission names (see /v1/permissions); never beyond your own.
    #[serde(deserialize_with = "super::views::bounded_list")]
    permissions: Vec<String>,
}

/// Creates a custom role.
#[utoipa::path(post, path = "/v1/roles", tag = "roles", request_body = CreateRoleBody, security(("bearer" = ["roles:manage"])),
    responses((status = 201, body = RoleBody),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "the name is taken")))]
async fn create_role(
    State(state): State<AppState>,
    auth: Authorized<perm::RolesManage>,
    ApiJson(body): ApiJson<CreateRoleBody>,
) -> ApiResult<(StatusCode, Json<RoleBody>)> {
    let input = RoleInput {
        description: body.description,
        permissions: Some(body.permissions),
    };
    let role = state
        .services
        .roles
        .create(Authority::Member(&auth.ctx), &body.name, input)
        .await?;
    Ok((StatusCode::CREATED, Json(role.into())))
}

/// One role.
#[utoipa::path(get, path = "/v1/roles/{name}", tag = "roles", params(("name" = String, Path)), security(("bearer" = ["users:read"])),
    responses((status = 200, body = RoleBody),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such role")))]
async fn get_role(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersRead>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<RoleBody>> {
    Ok(Json(
        state
            .services
            .roles
            .get(Authority::Member(&auth.ctx), &name)
            .await?
            .into(),
    ))
}

/// Changes to a custom role; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateRoleBody {
    description: Option<String>,
    #[serde(default, deserialize_with = "super::views::bounded_optional_list")]
    permissions: Option<Vec<String>>,
}

/// Changes a custom role (its holders' rights change on their next request).
#[utoipa::path(patch, path = "/v1/roles/{name}", tag = "roles", params(("name" = String, Path)), request_body = UpdateRoleBody,
    security(("bearer" = ["roles:manage"])),
    responses((status = 200, body = RoleBody),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such role")))]
async fn update_role(
    State(state): State<AppState>,
    auth: Authorized<perm::RolesManage>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateRoleBody>,
) -> ApiResult<Json<RoleBody>> {
    let input = RoleInput {
        description: body.description,
        permissions: body.permissions,
    };
    Ok(Json(
        state
            .services
            .roles
            .update(Authority::Member(&auth.ctx), &name, input)
            .await?
            .into(),
    ))
}

/// Deletes a custom role nobody holds.
#[utoipa::path(delete, path = "/v1/roles/{name}", tag = "roles", params(("name" = String, Path)), security(("bearer" = ["roles:manage"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such role"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "users still hold it")))]
async fn delete_role(
    State(state): State<AppState>,
    auth: Authorized<perm::RolesManage>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state
        .services
        .roles
        .delete(Authority::Member(&auth.ctx), &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
