//! Single sign-on: a tenant administrator's OIDC connection
//! (`/v1/tenant/sso/oidc`, `tenant:manage`; the client secret is write-only)
//! and the browser flow (`/v1/auth/sso/oidc/start` and `/callback`, no
//! credential, rate limited per address like the password login).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use karen_app::sso::{OidcCallback, OidcConnection, OidcConnectionInput};
use karen_domain::sso::{OidcSettings, RoleMapping};
use karen_domain::values::RoleName;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::TokenResponse;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Authorized, Client, perm};
use crate::rate_limit::SignInRateLimit;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_oidc, put_oidc, delete_oidc))
        .routes(routes!(start_oidc))
        .routes(routes!(oidc_callback))
}

/// How the provider's claim becomes roles.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleMappingView {
    /// The ID token claim (OIDC) or attribute (SAML) holding groups or roles
    /// (a string or a list), e.g. `groups`.
    claim: String,
    /// Claim value → role name (built-in or custom; never `owner`).
    #[serde(default)]
    values: BTreeMap<String, String>,
    /// The role when no value maps; null refuses such logins (`no_role`).
    #[serde(default)]
    default_role: Option<String>,
}

impl From<RoleMapping> for RoleMappingView {
    fn from(m: RoleMapping) -> Self {
        Self {
            claim: m.claim,
            values: m
                .values
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect(),
            default_role: m.default_role.map(|r| r.to_string()),
        }
    }
}

impl RoleMappingView {
    pub(super) fn parse(self) -> Result<RoleMapping, karen_domain::Error> {
        let field = |e: karen_domain::Error| ApiError::rename_field(e, &[("role", "role_mapping")]);
        if self.values.len() > karen_domain::sso::MAX_MAPPED_VALUES {
            return Err(karen_domain::Error::invalid(
                Some("role_mapping.values"),
                "too many claim values are mapped",
            ));
        }
        let values = self
            .values
            .into_iter()
            .map(|(k, v)| RoleName::parse(v.trim()).map(|r| (k, r)))
            .collect::<Result<_, _>>()
            .map_err(field)?;
        let default_role = self
            .default_role
            .map(|r| RoleName::parse(r.trim()))
            .transpose()
            .map_err(field)?;
        Ok(RoleMapping {
            claim: self.claim,
            values,
            default_role,
        })
    }
}

/// The organisation's OIDC connection (the client secret is never shown).
#[derive(Serialize, ToSchema)]
pub(crate) struct OidcConnectionView {
    id: Uuid,
    issuer: String,
    client_id: String,
    /// Requested besides `openid`.
    scopes: Vec<String>,
    role_mapping: RoleMappingView,
    enabled: bool,
    /// Whether a client secret is stored.
    client_secret_set: bool,
    /// The redirect URI to register at the provider (when `sso.public_url` is configured).
    redirect_uri: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<OidcConnection> for OidcConnectionView {
    fn from(c: OidcConnection) -> Self {
        Self {
            id: c.id.as_uuid(),
            issuer: c.settings.issuer,
            client_id: c.settings.client_id,
            scopes: c.settings.scopes,
            role_mapping: c.role_mapping.into(),
            enabled: c.enabled,
            client_secret_set: c.client_secret_set,
            redirect_uri: c.redirect_uri,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// An OIDC connection to create or replace.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OidcConnectionBody {
    /// The issuer URL (https; discovery at `<issuer>/.well-known/openid-configuration`).
    /// Private addresses need an entry in `sso.allow_private_addresses`.
    issuer: String,
    client_id: String,
    /// Write-only; omit to keep the stored one (required when creating).
    #[serde(default)]
    client_secret: Option<String>,
    /// Scopes besides `openid` (e.g. `email`, `profile`, `groups`).
    #[serde(default)]
    scopes: Vec<String>,
    role_mapping: RoleMappingView,
    /// Default true.
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

/// The default of `enabled` in connection bodies.
pub(super) fn enabled_by_default() -> bool {
    true
}

/// The organisation's OIDC single sign-on connection.
#[utoipa::path(get, path = "/v1/tenant/sso/oidc", tag = "sso", security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = OidcConnectionView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no connection is configured")))]
async fn get_oidc(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
) -> ApiResult<Json<OidcConnectionView>> {
    Ok(Json(
        state.services.sso.oidc_connection(&auth.ctx).await?.into(),
    ))
}

/// Creates or replaces the OIDC connection. The issuer's discovery document is
/// read at once (through the outbound policy, no redirects); mapped roles must
/// exist and grant nothing you lack.
#[utoipa::path(put, path = "/v1/tenant/sso/oidc", tag = "sso", request_body = OidcConnectionBody,
    security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = OidcConnectionView),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "disabling while the organisation requires SSO")))]
async fn put_oidc(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiJson(body): ApiJson<OidcConnectionBody>,
) -> ApiResult<Json<OidcConnectionView>> {
    let input = OidcConnectionInput {
        settings: OidcSettings {
            issuer: body.issuer,
            client_id: body.client_id,
            scopes: body.scopes,
        },
        client_secret: body.client_secret.map(SecretString::from),
        role_mapping: body.role_mapping.parse()?,
        enabled: body.enabled,
    };
    Ok(Json(
        state
            .services
            .sso
            .put_oidc_connection(&auth.ctx, input)
            .await?
            .into(),
    ))
}

/// Removes the OIDC connection and its identity links (users stay).
#[utoipa::path(delete, path = "/v1/tenant/sso/oidc", tag = "sso", security(("bearer" = ["tenant:manage"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no connection is configured"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "the organisation requires SSO")))]
async fn delete_oidc(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
) -> ApiResult<StatusCode> {
    state.services.sso.delete_oidc_connection(&auth.ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which organisation to sign in to.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StartQuery {
    /// The organisation's slug.
    tenant: String,
}

/// The request's own origin when it is addressed to a loopback host (a
/// development server without `sso.public_url`); never trusted otherwise.
pub(super) fn loopback_origin(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]").then(|| format!("http://{host}"))
}

/// Starts a single sign-on login: redirects the browser to the organisation's
/// identity provider (authorization code flow with PKCE S256, `state` and
/// `nonce`). An organisation without SSO answers 404.
#[utoipa::path(get, path = "/v1/auth/sso/oidc/start", tag = "sso", params(StartQuery),
    responses((status = 302, description = "to the identity provider (`Location`)"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such organisation, or it has no enabled SSO connection"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "too many requests from this address (`rate_limited`)"),
        (status = 502, body = crate::error::Problem, content_type = "application/problem+json", description = "the identity provider cannot be reached")))]
async fn start_oidc(
    _limit: SignInRateLimit,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StartQuery>,
) -> ApiResult<Response> {
    let origin = loopback_origin(&headers);
    let url = state
        .services
        .sso
        .start_oidc(&query.tenant, origin.as_deref())
        .await?;
    found(&url, "unusable authorization URL")
}

/// A 302 sending the browser to `url` (`unusable` says what it is, should it
/// not fit in a header).
pub(super) fn found(url: &str, unusable: &'static str) -> ApiResult<Response> {
    let location = header::HeaderValue::from_str(url)
        .map_err(|_| ApiError::from(karen_domain::Error::internal(unusable)))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

/// What the identity provider sends back (other parameters are ignored).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CallbackQuery {
    state: String,
    code: Option<String>,
    /// Set by the provider when the user declined or it refused.
    error: Option<String>,
}

/// Finishes a single sign-on login and opens a session: the same tokens as
/// `POST /v1/auth/login`. The first login creates the account (roles from the
/// mapped claim); later ones bring its roles in step.
#[utoipa::path(get, path = "/v1/auth/sso/oidc/callback", tag = "sso", params(CallbackQuery),
    responses((status = 200, body = TokenResponse),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json", description = "`sso_failed`: the state, code or ID token did not verify, or the account cannot be created (the detail names the reason)"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json", description = "tenant suspended or user disabled"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "too many requests or failures from this address"),
        (status = 502, body = crate::error::Problem, content_type = "application/problem+json", description = "the identity provider cannot be reached")))]
async fn oidc_callback(
    _limit: SignInRateLimit,
    State(state): State<AppState>,
    Client(client): Client,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> ApiResult<Json<TokenResponse>> {
    let callback = OidcCallback {
        state: query.state,
        code: query.code,
        error: query.error,
    };
    Ok(Json(
        state
            .services
            .sso
            .finish_oidc(callback, &client)
            .await?
            .into(),
    ))
}
