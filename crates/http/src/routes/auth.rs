//! Login, token refresh, logout, signup, `/v1/me`, password change and
//! setting a password with a password token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_app::auth::{LoginOutcome, LoginRequest, MfaChallenge, TokenPair};
use karen_app::tenants::NewTenant;
use karen_domain::Subject;
use karen_domain::mfa::ChallengePurpose;
use karen_domain::user::Password;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::views::{PasswordSetupView, TenantView, UserView};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Authorized, Client, perm};
use crate::rate_limit::SignInRateLimit;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(logout_everywhere))
        .routes(routes!(signup))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(set_password))
}

/// Email and password of a user of the tenant named by `tenant` (its slug).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    /// The organisation's slug.
    tenant: String,
    email: String,
    password: String,
}

/// What a password login answers: a session's tokens, or a challenge to
/// finish with a second factor.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum LoginResponse {
    Tokens(TokenResponse),
    SecondFactor(MfaChallengeResponse),
}

/// The password was right, and a second factor is needed. The challenge is
/// good for nothing but the next step (not a bearer credential).
#[derive(Serialize, ToSchema)]
pub(crate) struct MfaChallengeResponse {
    /// `mfa_required` (send a code from the authenticator app or a recovery
    /// code) or `mfa_enrollment_required` (the organisation requires a second
    /// factor this account lacks: enroll one first).
    status: &'static str,
    /// Send with the code to `POST /v1/auth/login/mfa`; usable once.
    challenge: String,
    /// Seconds the challenge stays valid.
    expires_in: u64,
    /// What to do next.
    next: &'static str,
}

impl From<MfaChallenge> for MfaChallengeResponse {
    fn from(challenge: MfaChallenge) -> Self {
        let (status, next) = match challenge.purpose {
            ChallengePurpose::Verify => (
                "mfa_required",
                "POST /v1/auth/login/mfa with the challenge and the current code of your authenticator app (or a recovery code)",
            ),
            ChallengePurpose::Enroll => (
                "mfa_enrollment_required",
                "your organisation requires multi-factor authentication: POST /v1/auth/login/mfa/enroll with the challenge, add the secret to an authenticator app, then POST /v1/auth/login/mfa with the challenge and its current code",
            ),
        };
        Self {
            status,
            challenge: challenge.token.expose_secret().to_owned(),
            expires_in: challenge.expires_in_secs,
            next,
        }
    }
}

/// A new session's tokens.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenResponse {
    /// Send as `Authorization: Bearer …`; valid for `expires_in` seconds.
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    expires_in: u64,
    /// Exchange at /v1/auth/refresh for a new pair; usable once.
    refresh_token: String,
    session_id: Uuid,
}

impl From<TokenPair> for TokenResponse {
    fn from(pair: TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            token_type: "Bearer",
            expires_in: pair.expires_in_secs,
            refresh_token: pair.refresh_token.expose_secret().to_owned(),
            session_id: pair.session_id.as_uuid(),
        }
    }
}

/// Logs in with a password and opens a session, or answers a challenge when
/// the account has (or must enroll) a second factor.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json", description = "wrong email or password"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json", description = "tenant suspended or user disabled"),
        (status = 423, body = crate::error::Problem, content_type = "application/problem+json", description = "account locked after repeated failures"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "too many failed attempts, or too many requests from this address (`rate_limited`); see Retry-After"),
    )
)]
async fn login(
    _limit: SignInRateLimit,
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Json<LoginResponse>> {
    let request = LoginRequest {
        tenant: body.tenant,
        email: body.email,
        password: Password::presented(&body.password),
    };
    Ok(Json(
        match state.services.auth.login(request, &client).await? {
            LoginOutcome::Tokens(pair) => LoginResponse::Tokens(pair.into()),
            LoginOutcome::SecondFactor(challenge) => LoginResponse::SecondFactor(challenge.into()),
        },
    ))
}

/// A refresh token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshBody {
    refresh_token: String,
}

/// Exchanges a refresh token for a new pair. Reusing a spent refresh token
/// revokes its whole session.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json", description = "invalid, spent or revoked refresh token"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "too many requests from this address (`rate_limited`); see Retry-After"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json", description = "tenant suspended or user disabled"),
    )
)]
async fn refresh(
    _limit: SignInRateLimit,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> ApiResult<Json<TokenResponse>> {
    Ok(Json(
        state
            .services
            .auth
            .refresh(&body.refresh_token)
            .await?
            .into(),
    ))
}

/// Ends the current session.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])), responses((status = 204)))]
async fn logout(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
) -> ApiResult<StatusCode> {
    state.services.auth.logout(&auth.ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions were ended.
#[derive(Serialize, ToSchema)]
pub(crate) struct LogoutEverywhere {
    sessions_revoked: u64,
}

/// Ends every session of the current user, on every device.
#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "auth", security(("bearer" = [])), responses((status = 200, body = LogoutEverywhere)))]
async fn logout_everywhere(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
) -> ApiResult<Json<LogoutEverywhere>> {
    let sessions_revoked = state.services.auth.logout_everywhere(&auth.ctx).await?;
    Ok(Json(LogoutEverywhere { sessions_revoked }))
}

/// A new organisation and its owner.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupBody {
    /// URL-safe identifier: 3–63 of a-z, 0-9 and '-'.
    tenant_slug: String,
    tenant_name: String,
    email: String,
    display_name: Option<String>,
    /// At least 12 characters.
    password: String,
}

/// A created tenant.
#[derive(Serialize, ToSchema)]
pub(crate) struct TenantCreated {
    tenant: TenantView,
    owner: UserView,
    /// When no owner password was given: the token with which the owner sets
    /// their first password (shown only here).
    #[serde(skip_serializing_if = "Option::is_none")]
    password_setup: Option<PasswordSetupView>,
}

impl From<karen_app::tenants::CreatedTenant> for TenantCreated {
    fn from(created: karen_app::tenants::CreatedTenant) -> Self {
        Self {
            tenant: created.tenant.into(),
            owner: created.owner.into(),
            password_setup: created.password_setup.map(Into::into),
        }
    }
}

/// Creates an organisation with its owner (only when self-service signup is enabled).
#[utoipa::path(
    post,
    path = "/v1/signup",
    tag = "auth",
    request_body = SignupBody,
    responses(
        (status = 201, body = TenantCreated),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "self-service signup is disabled"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "the slug is taken"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "too many requests from this address (`rate_limited`); see Retry-After"),
    )
)]
async fn signup(
    _limit: SignInRateLimit,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SignupBody>,
) -> ApiResult<(StatusCode, Json<TenantCreated>)> {
    let created = state
        .services
        .tenants
        .signup(NewTenant {
            slug: body.tenant_slug,
            name: body.tenant_name,
            plan: None,
            owner_email: body.email,
            owner_name: body.display_name,
            owner_password: Some(Password::parse(&body.password)?),
        })
        .await
        .map_err(|e| {
            ApiError::rename_field(e, &[("slug", "tenant_slug"), ("name", "tenant_name")])
        })?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// The authenticated principal.
#[derive(Serialize, ToSchema)]
pub(crate) struct Me {
    tenant_id: Uuid,
    tenant_slug: String,
    user_id: Uuid,
    email: String,
    /// `session` (access token) or `api_key`.
    auth_method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key_id: Option<Uuid>,
    roles: Vec<String>,
    /// What this credential may do (for an API key: its scopes within its owner's rights).
    permissions: Vec<String>,
}

/// Describes the principal behind the credential.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])), responses((status = 200, body = Me)))]
async fn me(auth: Authorized<perm::Member>) -> Json<Me> {
    let principal = auth.ctx.principal();
    let (auth_method, session_id, api_key_id) = match principal.subject {
        Subject::User { session_id } => ("session", Some(session_id.as_uuid()), None),
        Subject::ApiKey { key_id } => ("api_key", None, Some(key_id.as_uuid())),
    };
    Json(Me {
        tenant_id: principal.tenant_id.as_uuid(),
        tenant_slug: principal.tenant_slug.to_string(),
        user_id: principal.user_id.as_uuid(),
        email: principal.email.to_string(),
        auth_method,
        session_id,
        api_key_id,
        roles: principal.roles.iter().map(ToString::to_string).collect(),
        permissions: principal.permissions.names(),
    })
}

/// The current and the new password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordBody {
    current_password: String,
    /// At least 12 characters.
    new_password: String,
}

/// Changes the current user's password and ends their other sessions.
#[utoipa::path(post, path = "/v1/me/password", tag = "auth", security(("bearer" = [])), request_body = PasswordBody, responses((status = 204)))]
async fn change_password(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
    ApiJson(body): ApiJson<PasswordBody>,
) -> ApiResult<StatusCode> {
    let rename = |error| ApiError::rename_field(error, &[("password", "new_password")]);
    let new = Password::parse(&body.new_password).map_err(rename)?;
    state
        .services
        .auth
        .change_password(&auth.ctx, &Password::presented(&body.current_password), new)
        .await
        .map_err(rename)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A password token and the password to set with it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPasswordBody {
    /// The `kps_…` token from account creation (`password_setup`) or from an
    /// administrator's `POST /v1/users/{user_id}/password-reset`.
    token: String,
    /// At least 12 characters.
    new_password: String,
}

/// Sets an account's password with a single-use password token (no bearer
/// credential). Ends every session of the account and signs nobody in: log
/// in afterwards (with the second factor, if the account has one).
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    request_body = SetPasswordBody,
    responses(
        (status = 204, description = "the password is set; the token is spent"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json", description = "`invalid_token`: the token is unknown, used, superseded or expired, or the account cannot sign in"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "`new_password` does not meet the password policy (the token stays usable)"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "too many failed attempts from this address; see Retry-After"),
    )
)]
async fn set_password(
    _limit: SignInRateLimit,
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<SetPasswordBody>,
) -> ApiResult<StatusCode> {
    let rename = |error| ApiError::rename_field(error, &[("password", "new_password")]);
    let new_password = Password::parse(&body.new_password).map_err(rename)?;
    state
        .services
        .auth
        .set_password(&body.token, new_password, &client)
        .await
        .map_err(rename)?;
    Ok(StatusCode::NO_CONTENT)
}
