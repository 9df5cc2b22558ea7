//! Users of the caller's tenant.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_app::Authority;
use karen_app::users::{NewUser, UserChanges};
use karen_domain::UserId;
use karen_domain::user::Password;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::views::{PageParams, Paged, PasswordSetupView, UserView};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(set_roles))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(unlock_user))
        .routes(routes!(reset_mfa))
        .routes(routes!(reset_password))
}

/// Lists the tenant's users, oldest first.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(PageParams), security(("bearer" = ["users:read"])),
    responses((status = 200, body = Paged<UserView>)))]
async fn list_users(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersRead>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Paged<UserView>>> {
    let page = state
        .services
        .users
        .list(Authority::Member(&auth.ctx), &params.request()?)
        .await?;
    Ok(Json(Paged::from_page(page, UserView::from)))
}

/// A user to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUserBody {
    email: String,
    display_name: Option<String>,
    /// At least 12 characters. If absent, the account has no usable password
    /// until its holder sets one with the returned `password_setup` token.
    password: Option<String>,
    /// Role names; the tenant's default role if absent. Never beyond your own rights.
    #[serde(default, deserialize_with = "super::views::bounded_optional_list")]
    roles: Option<Vec<String>>,
}

/// A created user.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserCreated {
    user: UserView,
    /// When no password was given: the token with which the user sets their
    /// first password (hand it to them; shown only here).
    #[serde(skip_serializing_if = "Option::is_none")]
    password_setup: Option<PasswordSetupView>,
}

/// Creates a user.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = CreateUserBody, security(("bearer" = ["users:manage"])),
    responses((status = 201, body = UserCreated),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "the email is taken")))]
async fn create_user(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersManage>,
    ApiJson(body): ApiJson<CreateUserBody>,
) -> ApiResult<(StatusCode, Json<UserCreated>)> {
    let password = body.password.as_deref().map(Password::parse).transpose()?;
    let request = NewUser {
        email: body.email,
        display_name: body.display_name,
        password,
        roles: body.roles,
    };
    let (user, setup) = state
        .services
        .users
        .create(Authority::Member(&auth.ctx), request)
        .await?;
    let body = UserCreated {
        user: user.into(),
        password_setup: setup.map(Into::into),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// One user (yourself, or anyone with `users:read`).
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "users", params(("user_id" = uuid::Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = UserView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such user in your tenant")))]
async fn get_user(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    let id: UserId = path_id(&user_id)?;
    Ok(Json(
        state
            .services
            .users
            .get(Authority::Member(&auth.ctx), id)
            .await?
            .into(),
    ))
}

fn double_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// Profile changes; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateUserBody {
    email: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    display_name: Option<Option<String>>,
    /// Required when you change your own email.
    current_password: Option<String>,
}

/// Changes a user's email or display name (your own email needs `current_password`).
#[utoipa::path(patch, path = "/v1/users/{user_id}", tag = "users", params(("user_id" = uuid::Uuid, Path)),
    request_body = UpdateUserBody, security(("bearer" = ["users:manage"])),
    responses((status = 200, body = UserView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such user in your tenant"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "the email is taken")))]
async fn update_user(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersManage>,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateUserBody>,
) -> ApiResult<Json<UserView>> {
    let id: UserId = path_id(&user_id)?;
    let changes = UserChanges {
        email: body.email,
        display_name: body.display_name,
        current_password: body
            .current_password
            .as_deref()
            .map(Password::current)
            .transpose()?,
    };
    Ok(Json(
        state
            .services
            .users
            .update(Authority::Member(&auth.ctx), id, changes)
            .await?
            .into(),
    ))
}

/// The complete new set of roles.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolesBody {
    #[serde(deserialize_with = "super::views::bounded_list")]
    roles: Vec<String>,
}

/// Replaces a user's roles (never beyond your own rights; the last owner stays owner).
#[utoipa::path(put, path = "/v1/users/{user_id}/roles", tag = "users", params(("user_id" = uuid::Uuid, Path)),
    request_body = RolesBody, security(("bearer" = ["users:manage"])),
    responses((status = 200, body = UserView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such user in your tenant"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "would remove the last owner")))]
async fn set_roles(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersManage>,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(body): ApiJson<RolesBody>,
) -> ApiResult<Json<UserView>> {
    let id: UserId = path_id(&user_id)?;
    Ok(Json(
        state
            .services
            .users
            .set_roles(Authority::Member(&auth.ctx), id, &body.roles)
            .await?
            .into(),
    ))
}

/// Disables a user and ends all their sessions at once.
#[utoipa::path(post, path = "/v1/users/{user_id}/disable", tag = "users", params(("user_id" = uuid::Uuid, Path)),
    security(("bearer" = ["users:manage"])),
    responses((status = 200, body = UserView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such user in your tenant"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "yourself, or the last owner")))]
async fn disable_user(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersManage>,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    let id: UserId = path_id(&user_id)?;
    Ok(Json(
        state
            .services
            .users
            .disable(Authority::Member(&auth.ctx), id)
            .await?
            .into(),
    ))
}

/// Enables a disabled user.
#[utoipa::path(post, path = "/v1/users/{user_id}/enable", tag = "users", params(("user_id" = uuid::Uuid, Path)),
    security(("bearer" = ["users:manage"])),
    responses((status = 200, body = UserView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such user in your tenant")))]
async fn enable_user(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersManage>,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    let id: UserId = path_id(&user_id)?;
    Ok(Json(
        state
            .services
            .users
            .enable(Authority::Member(&auth.ctx), id)
            .await?
            .into(),
    ))
}

/// Lifts a login lockout early and clears the failure count.
#[utoipa::path(post, path = "/v1/users/{user_id}/unlock", tag = "users", params(("user_id" = uuid::Uuid, Path)),
    security(("bearer" = ["users:manage"])),
    responses((status = 200, body = UserView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such user in your tenant")))]
async fn unlock_user(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersManage>,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    let id: UserId = path_id(&user_id)?;
    Ok(Json(
        state
            .services
            .users
            .unlock(Authority::Member(&auth.ctx), id)
            .await?
            .into(),
    ))
}

/// Removes a user's authenticator and recovery codes (a lost device); they then
/// sign in with the password alone, or enroll again where the organisation
/// requires a second factor.
#[utoipa::path(delete, path = "/v1/users/{user_id}/mfa", tag = "users", params(("user_id" = uuid::Uuid, Path)),
    security(("bearer" = ["users:manage"])),
    responses((status = 204),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json", description = "missing users:manage, or the user holds rights you lack"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such user in your tenant")))]
async fn reset_mfa(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersManage>,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: UserId = path_id(&user_id)?;
    state
        .services
        .users
        .reset_mfa(Authority::Member(&auth.ctx), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a single-use password reset token for a user (shown once; hand it
/// to them). Their current password keeps working until the token is used at
/// `POST /v1/auth/password`; a new token supersedes earlier ones.
#[utoipa::path(post, path = "/v1/users/{user_id}/password-reset", tag = "users", params(("user_id" = uuid::Uuid, Path)),
    security(("bearer" = ["users:manage"])),
    responses((status = 201, body = PasswordSetupView),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json", description = "missing users:manage, or the user holds rights you lack"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such user in your tenant"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "the user is disabled")))]
async fn reset_password(
    State(state): State<AppState>,
    auth: Authorized<perm::UsersManage>,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<PasswordSetupView>)> {
    let id: UserId = path_id(&user_id)?;
    let setup = state
        .services
        .users
        .reset_password(Authority::Member(&auth.ctx), id)
        .await?;
    Ok((StatusCode::CREATED, Json(setup.into())))
}
