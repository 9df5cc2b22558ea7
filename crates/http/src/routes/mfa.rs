//! Multi-factor authentication: the second step of a login, and a user's own
//! TOTP authenticator (enroll, confirm, status, remove).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_app::auth::{SecondFactor, TotpEnrollment};
use karen_domain::Error;
use karen_domain::mfa::TotpState;
use karen_domain::user::Password;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::TokenResponse;
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, Authorized, Client, perm};
use crate::rate_limit::SignInRateLimit;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login_second_factor))
        .routes(routes!(enroll_at_login))
        .routes(routes!(mfa_status))
        .routes(routes!(start_totp, remove_totp))
        .routes(routes!(confirm_totp))
}

fn reveal_all(codes: Vec<SecretString>) -> Vec<String> {
    codes
        .iter()
        .map(|code| code.expose_secret().to_owned())
        .collect()
}

/// The challenge of a password login and exactly one second factor.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginMfaBody {
    /// The `challenge` the password login answered.
    challenge: String,
    /// The current six-digit code of the authenticator app.
    code: Option<String>,
    /// One unused recovery code (instead of `code`).
    recovery_code: Option<String>,
}

/// A new session's tokens; after enrolling during login, also the recovery codes.
#[derive(Serialize, ToSchema)]
pub(crate) struct MfaLoginResponse {
    #[serde(flatten)]
    tokens: TokenResponse,
    /// Ten single-use recovery codes, shown only here (after enrolling during login).
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_codes: Option<Vec<String>>,
}

/// Finishes a login with a second factor and opens the session.
#[utoipa::path(
    post,
    path = "/v1/auth/login/mfa",
    tag = "auth",
    request_body = LoginMfaBody,
    responses(
        (status = 200, body = MfaLoginResponse),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json", description = "wrong or reused code (`invalid_mfa_code`), or an invalid, spent or expired challenge (`invalid_token`)"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "neither or both of `code` and `recovery_code`"),
        (status = 423, body = crate::error::Problem, content_type = "application/problem+json", description = "account locked after repeated failures"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "too many failed attempts (`login_throttled`) or requests (`rate_limited`); see Retry-After"),
    )
)]
async fn login_second_factor(
    _limit: SignInRateLimit,
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<LoginMfaBody>,
) -> ApiResult<Json<MfaLoginResponse>> {
    let factor = match (body.code, body.recovery_code) {
        (Some(code), None) => SecondFactor::Totp(code),
        (None, Some(code)) => SecondFactor::RecoveryCode(code),
        _ => {
            return Err(Error::invalid(
                Some("code"),
                "send either `code` (from the authenticator app) or `recovery_code`, not both",
            )
            .into());
        }
    };
    let (pair, recovery_codes) = state
        .services
        .auth
        .complete_login(&body.challenge, factor, &client)
        .await?;
    Ok(Json(MfaLoginResponse {
        tokens: pair.into(),
        recovery_codes: recovery_codes.map(reveal_all),
    }))
}

/// A challenge whose login must first enroll an authenticator.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnrollAtLoginBody {
    challenge: String,
}

/// What an authenticator app needs; shown once.
#[derive(Serialize, ToSchema)]
pub(crate) struct TotpEnrollmentView {
    /// The shared secret in base32 (for typing in by hand).
    secret: String,
    /// `otpauth://totp/…` for the client to render as a QR code.
    otpauth_uri: String,
    /// Always `pending` until a code confirms it.
    state: &'static str,
}

impl From<TotpEnrollment> for TotpEnrollmentView {
    fn from(enrollment: TotpEnrollment) -> Self {
        Self {
            secret: enrollment.secret.expose_secret().to_owned(),
            otpauth_uri: enrollment.uri.expose_secret().to_owned(),
            state: TotpState::Pending.as_str(),
        }
    }
}

/// Starts enrolling an authenticator during a login that the organisation's
/// policy holds back (`mfa_enrollment_required`); finish with `POST /v1/auth/login/mfa`.
#[utoipa::path(
    post,
    path = "/v1/auth/login/mfa/enroll",
    tag = "auth",
    request_body = EnrollAtLoginBody,
    responses(
        (status = 200, body = TotpEnrollmentView),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json", description = "invalid, spent or expired challenge"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "the account already has an authenticator"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "too many requests from this address (`rate_limited`); see Retry-After"),
    )
)]
async fn enroll_at_login(
    _limit: SignInRateLimit,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnrollAtLoginBody>,
) -> ApiResult<Json<TotpEnrollmentView>> {
    Ok(Json(
        state
            .services
            .auth
            .enroll_at_login(&body.challenge)
            .await?
            .into(),
    ))
}

/// The current user's second factors.
#[derive(Serialize, ToSchema)]
pub(crate) struct MfaStatusView {
    /// `none`, `pending` (enrollment not confirmed) or `active`.
    totp: &'static str,
    /// Unused recovery codes.
    recovery_codes_left: i64,
    /// Whether the organisation's policy (`settings.mfa_required`) requires a
    /// second factor of this user.
    required: bool,
}

/// Shows the current user's second factors.
#[utoipa::path(get, path = "/v1/auth/mfa", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = MfaStatusView)))]
async fn mfa_status(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
) -> ApiResult<Json<MfaStatusView>> {
    let overview = state.services.auth.mfa_overview(&auth.ctx).await?;
    Ok(Json(MfaStatusView {
        totp: overview.status.totp.map_or("none", TotpState::as_str),
        recovery_codes_left: overview.status.recovery_codes_left,
        required: overview.required,
    }))
}

/// Starts enrolling a TOTP authenticator (replacing an unconfirmed one); confirm
/// with a code at `POST /v1/auth/mfa/totp/confirm`.
#[utoipa::path(post, path = "/v1/auth/mfa/totp", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TotpEnrollmentView),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json", description = "an API key cannot manage MFA"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "an authenticator is already active")))]
async fn start_totp(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
) -> ApiResult<Json<TotpEnrollmentView>> {
    Ok(Json(
        state.services.auth.start_totp(&auth.ctx).await?.into(),
    ))
}

/// A code of the authenticator being enrolled.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfirmTotpBody {
    /// The current six-digit code.
    code: String,
}

/// The recovery codes, shown once.
#[derive(Serialize, ToSchema)]
pub(crate) struct RecoveryCodesView {
    /// Ten single-use codes for signing in without the authenticator; store them safely.
    recovery_codes: Vec<String>,
}

/// Activates the enrolled authenticator with its current code and returns ten
/// single-use recovery codes (only now).
#[utoipa::path(post, path = "/v1/auth/mfa/totp/confirm", tag = "auth", security(("bearer" = [])),
    request_body = ConfirmTotpBody,
    responses((status = 200, body = RecoveryCodesView),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "no enrollment is pending"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "the code does not match")))]
async fn confirm_totp(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
    ApiJson(body): ApiJson<ConfirmTotpBody>,
) -> ApiResult<Json<RecoveryCodesView>> {
    let codes = state
        .services
        .auth
        .confirm_totp(&auth.ctx, &body.code)
        .await?;
    Ok(Json(RecoveryCodesView {
        recovery_codes: reveal_all(codes),
    }))
}

/// Proof for removing the authenticator: a current code or the password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoveTotpBody {
    code: Option<String>,
    password: Option<String>,
}

/// Removes the current user's authenticator and recovery codes.
#[utoipa::path(delete, path = "/v1/auth/mfa/totp", tag = "auth", security(("bearer" = [])),
    request_body = RemoveTotpBody,
    responses((status = 204),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json", description = "the organisation requires MFA of this user, or an API key was used"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no authenticator"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "wrong code or password")))]
async fn remove_totp(
    State(state): State<AppState>,
    auth: Authorized<perm::Member>,
    ApiJson(body): ApiJson<RemoveTotpBody>,
) -> ApiResult<StatusCode> {
    let password = body.password.as_deref().map(Password::presented);
    state
        .services
        .auth
        .remove_totp(&auth.ctx, body.code.as_deref(), password.as_ref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
