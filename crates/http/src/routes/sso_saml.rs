//! SAML 2.0 single sign-on: a tenant administrator's connection
//! (`/v1/tenant/sso/saml`, `tenant:manage`), the per-organisation SP
//! metadata, and the browser flow (`/v1/auth/sso/saml/start` and the
//! assertion consumer service `/v1/auth/sso/saml/acs`; no credential, rate
//! limited per address like the password login).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use karen_app::sso::{SamlAcsPost, SamlConnection, SamlConnectionInput, SamlIdpSource};
use karen_domain::Error;
use karen_domain::saml::{SamlAuthnRequest, SamlBinding};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::TokenResponse;
use super::sso::{RoleMappingView, enabled_by_default, found, loopback_origin};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, Client, perm};
use crate::rate_limit::SignInRateLimit;

/// The largest IdP metadata or certificate text accepted.
const MAX_IDP_DOCUMENT_BYTES: usize = 512 * 1024;
/// The largest ACS form body (a signed response with a few certificates).
const MAX_ACS_FORM_BYTES: usize = 1024 * 1024;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_saml, put_saml, delete_saml))
        .routes(routes!(saml_metadata))
        .routes(routes!(start_saml))
        .routes(routes!(saml_acs))
}

/// A binding of the AuthnRequest.
#[derive(Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BindingView {
    /// HTTP-Redirect: a 302 to the IdP with the request in the query.
    Redirect,
    /// HTTP-POST: an auto-submitting form.
    Post,
}

impl From<BindingView> for SamlBinding {
    fn from(b: BindingView) -> Self {
        match b {
            BindingView::Redirect => SamlBinding::Redirect,
            BindingView::Post => SamlBinding::Post,
        }
    }
}

impl From<SamlBinding> for BindingView {
    fn from(b: SamlBinding) -> Self {
        match b {
            SamlBinding::Redirect => BindingView::Redirect,
            SamlBinding::Post => BindingView::Post,
        }
    }
}

/// The organisation's SAML connection.
#[derive(Serialize, ToSchema)]
pub(crate) struct SamlConnectionView {
    id: Uuid,
    /// The IdP's entity ID (the Issuer its responses must carry).
    idp_entity_id: String,
    sso_redirect_url: Option<String>,
    sso_post_url: Option<String>,
    /// How many signing certificates are trusted.
    signing_certificates: usize,
    /// The binding logins use.
    binding: BindingView,
    email_attribute: Option<String>,
    name_attribute: Option<String>,
    /// `claim` is the SAML attribute holding groups or roles.
    role_mapping: RoleMappingView,
    enabled: bool,
    /// Our entity ID, also the SP metadata URL (when `sso.public_url` is configured).
    sp_entity_id: Option<String>,
    /// Our assertion consumer service URL (HTTP-POST).
    acs_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<SamlConnection> for SamlConnectionView {
    fn from(c: SamlConnection) -> Self {
        Self {
            id: c.id.as_uuid(),
            idp_entity_id: c.settings.idp_entity_id,
            sso_redirect_url: c.settings.sso_redirect_url,
            sso_post_url: c.settings.sso_post_url,
            signing_certificates: c.settings.signing_certificates.len(),
            binding: c.settings.binding.into(),
            email_attribute: c.settings.email_attribute,
            name_attribute: c.settings.name_attribute,
            role_mapping: c.role_mapping.into(),
            enabled: c.enabled,
            sp_entity_id: c.sp_entity_id,
            acs_url: c.acs_url,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A SAML connection to create or replace: the IdP's metadata XML, or its
/// entity ID, SSO URL and signing certificate.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SamlConnectionBody {
    /// The IdP's metadata (an `md:EntityDescriptor`), as XML text.
    #[serde(default)]
    idp_metadata: Option<String>,
    /// Without metadata: the IdP's entity ID.
    #[serde(default)]
    idp_entity_id: Option<String>,
    /// Without metadata: the IdP's single sign-on URL.
    #[serde(default)]
    sso_url: Option<String>,
    /// Without metadata: the binding of `sso_url` (default `redirect`).
    #[serde(default)]
    sso_binding: Option<BindingView>,
    /// Without metadata: the IdP's signing certificate(s), PEM.
    #[serde(default)]
    certificate_pem: Option<String>,
    /// The binding logins use when the IdP offers both (default `redirect`).
    #[serde(default)]
    binding: Option<BindingView>,
    /// The attribute holding the email; default: the NameID when it is an
    /// email address, else an `email` or `mail` attribute.
    #[serde(default)]
    email_attribute: Option<String>,
    /// The attribute holding the display name.
    #[serde(default)]
    name_attribute: Option<String>,
    /// `claim` is the SAML attribute holding groups or roles.
    role_mapping: RoleMappingView,
    /// Default true.
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

fn too_long(field: &str, text: &str) -> Result<(), Error> {
    if text.len() > MAX_IDP_DOCUMENT_BYTES {
        return Err(Error::invalid(
            Some(field),
            format!("at most {MAX_IDP_DOCUMENT_BYTES} bytes"),
        ));
    }
    Ok(())
}

impl SamlConnectionBody {
    fn parse(self) -> Result<SamlConnectionInput, Error> {
        let idp = match (
            self.idp_metadata,
            self.idp_entity_id,
            self.sso_url,
            self.certificate_pem,
        ) {
            (Some(xml), None, None, None) => {
                too_long("idp_metadata", &xml)?;
                SamlIdpSource::Metadata(xml)
            }
            (None, Some(entity_id), Some(sso_url), Some(certificate_pem)) => {
                too_long("certificate_pem", &certificate_pem)?;
                for (field, value) in [("idp_entity_id", &entity_id), ("sso_url", &sso_url)] {
                    if value.len() > 2048 {
                        return Err(Error::invalid(Some(field), "at most 2048 characters"));
                    }
                }
                SamlIdpSource::Certificate {
                    entity_id,
                    sso_url,
                    binding: self.sso_binding.map_or(SamlBinding::Redirect, Into::into),
                    certificate_pem,
                }
            }
            _ => {
                return Err(Error::invalid(
                    Some("idp_metadata"),
                    "give either idp_metadata, or idp_entity_id, sso_url and certificate_pem",
                ));
            }
        };
        Ok(SamlConnectionInput {
            idp,
            binding: self.binding.map(Into::into),
            email_attribute: self.email_attribute,
            name_attribute: self.name_attribute,
            role_mapping: self.role_mapping.parse()?,
            enabled: self.enabled,
        })
    }
}

/// The organisation's SAML single sign-on connection.
#[utoipa::path(get, path = "/v1/tenant/sso/saml", tag = "sso", security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = SamlConnectionView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no connection is configured")))]
async fn get_saml(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
) -> ApiResult<Json<SamlConnectionView>> {
    Ok(Json(
        state.services.sso.saml_connection(&auth.ctx).await?.into(),
    ))
}

/// Creates or replaces the SAML connection. Metadata or certificate that do
/// not parse, or hold no usable signing key, are a 422 naming the field and
/// the SAML code (e.g. `saml_malformed`, `saml_certificate`).
#[utoipa::path(put, path = "/v1/tenant/sso/saml", tag = "sso", request_body = SamlConnectionBody,
    security(("bearer" = ["tenant:manage"])),
    responses((status = 200, body = SamlConnectionView),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "disabling while the organisation requires SSO"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "bad metadata, certificate or mapping")))]
async fn put_saml(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
    ApiJson(body): ApiJson<SamlConnectionBody>,
) -> ApiResult<Json<SamlConnectionView>> {
    let input = body.parse()?;
    Ok(Json(
        state
            .services
            .sso
            .put_saml_connection(&auth.ctx, input)
            .await?
            .into(),
    ))
}

/// Removes the SAML connection and its identity links (users stay).
#[utoipa::path(delete, path = "/v1/tenant/sso/saml", tag = "sso", security(("bearer" = ["tenant:manage"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no connection is configured"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "the organisation requires SSO")))]
async fn delete_saml(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantManage>,
) -> ApiResult<StatusCode> {
    state.services.sso.delete_saml_connection(&auth.ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The organisation's SAML service-provider metadata (its URL is the SP
/// entity ID) for the identity provider's administrator. Public; it depends
/// on the slug only, so it says nothing about which organisations exist.
#[utoipa::path(get, path = "/v1/auth/sso/saml/{tenant_slug}/metadata", tag = "sso",
    params(("tenant_slug" = String, Path, description = "the organisation's slug")),
    responses((status = 200, content_type = "application/samlmetadata+xml", description = "SPSSODescriptor: ACS (HTTP-POST), NameID format, signed assertions wanted"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "not a slug")))]
async fn saml_metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(tenant_slug): ApiPath<String>,
) -> ApiResult<Response> {
    let origin = loopback_origin(&headers);
    let xml = state
        .services
        .sso
        .saml_metadata(&tenant_slug, origin.as_deref())?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/samlmetadata+xml"),
        )],
        xml,
    )
        .into_response())
}

/// Which organisation to sign in to, and how.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StartQuery {
    /// The organisation's slug.
    tenant: String,
    /// `redirect` or `post`; default: the connection's binding. The other
    /// one is used when the IdP does not offer the one asked for.
    binding: Option<BindingView>,
}

/// Starts a SAML login (SP-initiated): redirects the browser to the IdP
/// (HTTP-Redirect binding) or answers an auto-submitting form that posts the
/// AuthnRequest to it (HTTP-POST). An organisation without SAML answers 404.
#[utoipa::path(get, path = "/v1/auth/sso/saml/start", tag = "sso", params(StartQuery),
    responses((status = 302, description = "HTTP-Redirect binding: to the identity provider (`Location`)"),
        (status = 200, content_type = "text/html", description = "HTTP-POST binding: a form posting `SAMLRequest` and `RelayState` to the identity provider"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such organisation, or it has no enabled SAML connection"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "too many requests from this address (`rate_limited`)")))]
async fn start_saml(
    _limit: SignInRateLimit,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StartQuery>,
) -> ApiResult<Response> {
    let origin = loopback_origin(&headers);
    let request = state
        .services
        .sso
        .start_saml(
            &query.tenant,
            query.binding.map(Into::into),
            origin.as_deref(),
        )
        .await?;
    match request {
        SamlAuthnRequest::Redirect(url) => found(&url, "unusable SAML redirect URL"),
        SamlAuthnRequest::Post {
            action,
            saml_request,
            relay_state,
        } => post_form(&action, &saml_request, &relay_state),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// The HTTP-POST binding page: a form to the IdP that submits itself. Its
/// content security policy lets only this page's script run (by nonce) and
/// the form post only to the IdP's origin.
fn post_form(action: &str, saml_request: &str, relay_state: &str) -> ApiResult<Response> {
    let nonce_bytes: [u8; 16] = karen_app::credentials::random_bytes()?;
    let nonce = base64::engine::general_purpose::STANDARD.encode(nonce_bytes);
    let origin = action_origin(action)
        .ok_or_else(|| ApiError::from(Error::internal("unusable IdP SSO URL")))?;
    let html = format!(
        concat!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Signing in…</title></head>",
            "<body><form method=\"post\" action=\"{action}\">",
            "<input type=\"hidden\" name=\"SAMLRequest\" value=\"{request}\"/>",
            "<input type=\"hidden\" name=\"RelayState\" value=\"{relay}\"/>",
            "<noscript><button type=\"submit\">Continue to sign in</button></noscript></form>",
            "<script nonce=\"{nonce}\">document.forms[0].submit();</script></body></html>\n"
        ),
        action = escape(action),
        request = escape(saml_request),
        relay = escape(relay_state),
        nonce = nonce,
    );
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; form-action {origin}; frame-ancestors 'none'; base-uri 'none'"
    );
    let csp = HeaderValue::from_str(&csp)
        .map_err(|_| ApiError::from(Error::internal("unusable content security policy")))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp),
        ],
        html,
    )
        .into_response())
}

/// `scheme://host[:port]` of a URL (checked by the SAML core when configured).
fn action_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let safe = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    (matches!(scheme, "https" | "http") && safe).then(|| format!("{scheme}://{authority}"))
}

/// The IdP's HTTP-POST to the assertion consumer service.
#[derive(Deserialize, ToSchema)]
pub(crate) struct AcsForm {
    /// The base64 `samlp:Response`.
    #[serde(rename = "SAMLResponse")]
    saml_response: String,
    /// The `krq_` handle `start` sent with the request.
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

/// 413: a SAML response larger than [`MAX_ACS_FORM_BYTES`] (or the body limit).
fn response_too_large() -> ApiError {
    ApiError::http(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the SAML response is larger than this server accepts",
    )
}

fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<AcsForm, ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(ApiError::http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the identity provider posts 'Content-Type: application/x-www-form-urlencoded'",
        ));
    }
    if body.len() > MAX_ACS_FORM_BYTES {
        return Err(response_too_large());
    }
    serde_urlencoded::from_bytes(body).map_err(|e| {
        ApiError::bad_request(format!("the form needs SAMLResponse and RelayState: {e}"))
    })
}

/// The assertion consumer service (HTTP-POST binding): verifies the IdP's
/// response and opens a session, with the same tokens as
/// `POST /v1/auth/login` and the OIDC callback. The first login creates the
/// account (roles from the mapped attribute); later ones bring its roles in
/// step.
#[utoipa::path(post, path = "/v1/auth/sso/saml/acs", tag = "sso",
    request_body(content = AcsForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json", description = "`sso_failed`: the RelayState or the response did not verify (unsigned, another key, wrapped, expired, replayed, wrong audience, destination or InResponseTo), or the account cannot be created; the detail names the reason"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json", description = "tenant suspended or user disabled"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json", description = "not a form"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "too many requests or failures from this address")))]
async fn saml_acs(
    _limit: SignInRateLimit,
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<TokenResponse>> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            response_too_large()
        } else {
            ApiError::bad_request("the request body could not be read")
        }
    })?;
    let form = parse_form(&headers, &body)?;
    let post = SamlAcsPost {
        saml_response: form.saml_response,
        relay_state: form.relay_state,
    };
    Ok(Json(
        state.services.sso.finish_saml(post, &client).await?.into(),
    ))
}
