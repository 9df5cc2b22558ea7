//! SCIM 2.0 (RFC 7643/7644) for identity providers: `/scim/v2/Users` and
//! `/scim/v2/Groups` of the credential's tenant, with an API key carrying
//! `scim:provision`, plus the discovery documents (`scim_discovery.rs`).
//! Bodies are `application/scim+json` (plain JSON is accepted too); errors use
//! SCIM's error shape (see [`scim_model::scim_errors`]).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use karen_app::scim::{ScimGroupView, ScimUserView};
use karen_domain::scim::patch;
use karen_domain::scim::resource::{GroupDraft, UserDraft};
use karen_domain::{Error, ScimGroupId, UserId};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::scim_model::{
    self, ListParams, ResourceParams, ScimError, ScimGroupDoc, ScimListDoc, ScimPatchDoc,
    ScimUserDoc, group_json, if_match, list_json, scim_response, user_json,
};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, replace_user, patch_user, delete_user))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, replace_group, patch_group, delete_group))
        .merge(super::scim_discovery::routes())
}

/// A user id from the path; one that is not a UUID is as missing as any other.
fn user_id(text: &str) -> Result<UserId, Error> {
    UserId::parse(text).map_err(|_| Error::NotFound("user"))
}

fn group_id(text: &str) -> Result<ScimGroupId, Error> {
    ScimGroupId::parse(text).map_err(|_| Error::NotFound("group"))
}

/// A resource as the handlers answer it: its document, version and URL.
trait ScimResource {
    /// The whole SCIM document.
    fn document(&self) -> Value;
    /// The version, sent as `ETag`.
    fn version(&self) -> String;
    /// The path of the resource (`Location`).
    fn location(&self) -> String;
}

impl ScimResource for ScimUserView {
    fn document(&self) -> Value {
        user_json(self)
    }

    fn version(&self) -> String {
        self.etag()
    }

    fn location(&self) -> String {
        format!("{}/Users/{}", scim_model::BASE, self.user.id)
    }
}

impl ScimResource for ScimGroupView {
    fn document(&self) -> Value {
        group_json(self)
    }

    fn version(&self) -> String {
        self.etag()
    }

    fn location(&self) -> String {
        format!("{}/Groups/{}", scim_model::BASE, self.group.id)
    }
}

/// 200 with `body` (the resource's document, perhaps projected) and its `ETag`.
fn shown(resource: &impl ScimResource, body: &Value) -> Response {
    scim_response(StatusCode::OK, body, Some(resource.version()))
}

/// 200 with the whole changed resource and its `ETag`.
fn changed(resource: &impl ScimResource) -> Response {
    shown(resource, &resource.document())
}

/// 201 with the new resource, its `Location` and `ETag`.
fn created(resource: &impl ScimResource) -> Response {
    let mut response = scim_response(
        StatusCode::CREATED,
        &resource.document(),
        Some(resource.version()),
    );
    if let Ok(value) = HeaderValue::from_str(&resource.location()) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Lists users: all of them, or those a filter finds (`userName eq "…"`, `externalId eq "…"`).
#[utoipa::path(get, path = "/scim/v2/Users", tag = "scim", params(ListParams),
    security(("bearer" = ["scim:provision"])),
    responses((status = 200, body = ScimListDoc, content_type = "application/scim+json"),
        (status = 400, body = ScimError, content_type = "application/scim+json", description = "`invalidFilter`: a filter other than `userName eq` / `externalId eq`")))]
async fn list_users(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    let (query, projection) = params.query()?;
    let list = state.services.scim.list_users(&auth.ctx, &query).await?;
    let body = list_json(&list, |v| projection.apply(user_json(v)));
    Ok(scim_response(StatusCode::OK, &body, None))
}

/// Creates a user (no password: they sign in with single sign-on) with the
/// tenant's default role.
#[utoipa::path(post, path = "/scim/v2/Users", tag = "scim",
    request_body(description = "a User", content((ScimUserDoc = "application/scim+json"), (ScimUserDoc = "application/json"))),
    security(("bearer" = ["scim:provision"])),
    responses((status = 201, body = ScimUserDoc, content_type = "application/scim+json"),
        (status = 409, body = ScimError, content_type = "application/scim+json", description = "`uniqueness`: the userName is taken")))]
async fn create_user(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let attrs = UserDraft::from_json(&body)?.finish()?;
    let view = state.services.scim.create_user(&auth.ctx, attrs).await?;
    Ok(created(&view))
}

/// One user.
#[utoipa::path(get, path = "/scim/v2/Users/{user_id}", tag = "scim",
    params(("user_id" = uuid::Uuid, Path), ResourceParams), security(("bearer" = ["scim:provision"])),
    responses((status = 200, body = ScimUserDoc, content_type = "application/scim+json"),
        (status = 404, body = ScimError, content_type = "application/scim+json", description = "no such user in your tenant")))]
async fn get_user(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<ResourceParams>,
) -> ApiResult<Response> {
    let view = state
        .services
        .scim
        .get_user(&auth.ctx, user_id(&id)?)
        .await?;
    Ok(shown(&view, &params.projection().apply(view.document())))
}

/// Replaces a user's attributes; `active: false` deprovisions (disables the
/// account and ends its sessions at once).
#[utoipa::path(put, path = "/scim/v2/Users/{user_id}", tag = "scim", params(("user_id" = uuid::Uuid, Path)),
    request_body(description = "the whole User", content((ScimUserDoc = "application/scim+json"), (ScimUserDoc = "application/json"))),
    security(("bearer" = ["scim:provision"])),
    responses((status = 200, body = ScimUserDoc, content_type = "application/scim+json"),
        (status = 404, body = ScimError, content_type = "application/scim+json", description = "no such user in your tenant"),
        (status = 412, body = ScimError, content_type = "application/scim+json", description = "`If-Match` names an older version")))]
async fn replace_user(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = user_id(&id)?;
    let draft = UserDraft::from_json(&body)?;
    let view = state
        .services
        .scim
        .replace_user(&auth.ctx, id, draft, if_match(&headers).as_deref())
        .await?;
    Ok(changed(&view))
}

/// Changes a user with PATCH operations (Okta's and Entra's shapes);
/// `active` false deprovisions.
#[utoipa::path(patch, path = "/scim/v2/Users/{user_id}", tag = "scim", params(("user_id" = uuid::Uuid, Path)),
    request_body(description = "a PatchOp", content((ScimPatchDoc = "application/scim+json"), (ScimPatchDoc = "application/json"))),
    security(("bearer" = ["scim:provision"])),
    responses((status = 200, body = ScimUserDoc, content_type = "application/scim+json"),
        (status = 400, body = ScimError, content_type = "application/scim+json", description = "`invalidPath`, `noTarget`, `mutability`, `invalidValue`"),
        (status = 404, body = ScimError, content_type = "application/scim+json", description = "no such user in your tenant")))]
async fn patch_user(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = user_id(&id)?;
    let operations = patch::parse(&body)?;
    let view = state
        .services
        .scim
        .patch_user(&auth.ctx, id, &operations, if_match(&headers).as_deref())
        .await?;
    Ok(changed(&view))
}

/// Deletes a user: the account is disabled (kept for the audit trail), its
/// sessions end, it leaves its groups, and SCIM no longer shows it.
#[utoipa::path(delete, path = "/scim/v2/Users/{user_id}", tag = "scim", params(("user_id" = uuid::Uuid, Path)),
    security(("bearer" = ["scim:provision"])),
    responses((status = 204, description = "deleted"),
        (status = 404, body = ScimError, content_type = "application/scim+json", description = "no such user in your tenant")))]
async fn delete_user(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = user_id(&id)?;
    state
        .services
        .scim
        .delete_user(&auth.ctx, id, if_match(&headers).as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Lists groups: all of them, or those a filter finds (`displayName eq "…"`, `externalId eq "…"`).
#[utoipa::path(get, path = "/scim/v2/Groups", tag = "scim", params(ListParams),
    security(("bearer" = ["scim:provision"])),
    responses((status = 200, body = ScimListDoc, content_type = "application/scim+json"),
        (status = 400, body = ScimError, content_type = "application/scim+json", description = "`invalidFilter`")))]
async fn list_groups(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    let (query, projection) = params.query()?;
    let list = state
        .services
        .scim
        .list_groups(&auth.ctx, &query, projection.keeps("members"))
        .await?;
    let body = list_json(&list, |v| projection.apply(group_json(v)));
    Ok(scim_response(StatusCode::OK, &body, None))
}

/// Creates a group; one named like a role grants it to its members.
#[utoipa::path(post, path = "/scim/v2/Groups", tag = "scim",
    request_body(description = "a Group", content((ScimGroupDoc = "application/scim+json"), (ScimGroupDoc = "application/json"))),
    security(("bearer" = ["scim:provision"])),
    responses((status = 201, body = ScimGroupDoc, content_type = "application/scim+json"),
        (status = 409, body = ScimError, content_type = "application/scim+json", description = "`uniqueness`: a group has this displayName")))]
async fn create_group(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let draft = GroupDraft::from_json(&body)?;
    let view = state.services.scim.create_group(&auth.ctx, draft).await?;
    Ok(created(&view))
}

/// One group.
#[utoipa::path(get, path = "/scim/v2/Groups/{group_id}", tag = "scim",
    params(("group_id" = uuid::Uuid, Path), ResourceParams), security(("bearer" = ["scim:provision"])),
    responses((status = 200, body = ScimGroupDoc, content_type = "application/scim+json"),
        (status = 404, body = ScimError, content_type = "application/scim+json", description = "no such group in your tenant")))]
async fn get_group(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<ResourceParams>,
) -> ApiResult<Response> {
    let projection = params.projection();
    let view = state
        .services
        .scim
        .get_group(&auth.ctx, group_id(&id)?, projection.keeps("members"))
        .await?;
    Ok(shown(&view, &projection.apply(view.document())))
}

/// Replaces a group's name, externalId and members.
#[utoipa::path(put, path = "/scim/v2/Groups/{group_id}", tag = "scim", params(("group_id" = uuid::Uuid, Path)),
    request_body(description = "the whole Group", content((ScimGroupDoc = "application/scim+json"), (ScimGroupDoc = "application/json"))),
    security(("bearer" = ["scim:provision"])),
    responses((status = 200, body = ScimGroupDoc, content_type = "application/scim+json"),
        (status = 404, body = ScimError, content_type = "application/scim+json", description = "no such group in your tenant")))]
async fn replace_group(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = group_id(&id)?;
    let draft = GroupDraft::from_json(&body)?;
    let view = state
        .services
        .scim
        .replace_group(&auth.ctx, id, draft, if_match(&headers).as_deref())
        .await?;
    Ok(changed(&view))
}

/// Changes a group with PATCH operations: rename, add or remove members.
#[utoipa::path(patch, path = "/scim/v2/Groups/{group_id}", tag = "scim", params(("group_id" = uuid::Uuid, Path)),
    request_body(description = "a PatchOp", content((ScimPatchDoc = "application/scim+json"), (ScimPatchDoc = "application/json"))),
    security(("bearer" = ["scim:provision"])),
    responses((status = 200, body = ScimGroupDoc, content_type = "application/scim+json"),
        (status = 400, body = ScimError, content_type = "application/scim+json", description = "`invalidPath`, `noTarget`, `mutability`, `invalidValue`"),
        (status = 404, body = ScimError, content_type = "application/scim+json", description = "no such group in your tenant")))]
async fn patch_group(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let id = group_id(&id)?;
    let operations = patch::parse(&body)?;
    let view = state
        .services
        .scim
        .patch_group(&auth.ctx, id, &operations, if_match(&headers).as_deref())
        .await?;
    Ok(changed(&view))
}

/// Deletes a group; its members lose the role it granted (unless another
/// group grants it, or they held it before).
#[utoipa::path(delete, path = "/scim/v2/Groups/{group_id}", tag = "scim", params(("group_id" = uuid::Uuid, Path)),
    security(("bearer" = ["scim:provision"])),
    responses((status = 204, description = "deleted"),
        (status = 404, body = ScimError, content_type = "application/scim+json", description = "no such group in your tenant")))]
async fn delete_group(
    State(state): State<AppState>,
    auth: Authorized<perm::ScimProvision>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = group_id(&id)?;
    state
        .services
        .scim
        .delete_group(&auth.ctx, id, if_match(&headers).as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
