//! Extractors. Every rejection becomes a problem document; authentication and
//! the route's permission are enforced by one extractor, [`Authorized`].

use std::marker::PhantomData;
use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use karen_app::auth::ClientInfo;
use karen_domain::error::AuthFailure;
use karen_domain::permission::Permission;
use karen_domain::{Error, OperatorPrincipal, TenantContext};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// A JSON body; malformed JSON, unknown fields, wrong types, a missing
/// content type and oversize bodies each get their own problem.
pub struct ApiJson<T>(pub T);

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let text = rejection.body_text();
    let too_large = rejection.status() == StatusCode::PAYLOAD_TOO_LARGE;
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json'",
        ),
        JsonRejection::JsonSyntaxError(_) => ApiError::http(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {text}"),
        ),
        JsonRejection::JsonDataError(_) => {
            ApiError::Domain(Error::invalid(data_error_field(&text).as_deref(), text))
        }
        JsonRejection::BytesRejection(_) if too_large => ApiError::http(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than this server accepts",
        ),
        _ => ApiError::http(StatusCode::BAD_REQUEST, "bad_request", text),
    }
}

/// The JSON path of a deserialisation error ("…target type: owner.email: …").
fn data_error_field(text: &str) -> Option<String> {
    let rest = text.split_once("target type: ")?.1;
    let (path, _) = rest.split_once(": ")?;
    let path = path.trim();
    (!path.is_empty() && path != "." && !path.contains(' ')).then(|| path.to_owned())
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Query parameters; bad ones are a `bad_request` naming the problem.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(format!(
        "invalid query parameters: {}",
        rejection.body_text()
    ))
}

/// Path parameters; undecodable ones are a `bad_request`.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "invalid path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// Parses an id from the path; a malformed id is a `bad_request`.
pub fn path_id<T: std::str::FromStr<Err = Error>>(text: &str) -> Result<T, ApiError> {
    text.parse::<T>()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The `Bearer` credential of the request.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(Error::Unauthenticated(AuthFailure::Missing).into());
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("the Authorization header must be visible ASCII"))?;
    let (scheme, credential) = text
        .split_once(' ')
        .ok_or(Error::Unauthenticated(AuthFailure::Missing))?;
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(Error::Unauthenticated(AuthFailure::Missing).into());
    }
    Ok(credential.trim())
}

/// What a route requires beyond authentication.
pub trait RoutePermission: Send + Sync + 'static {
    /// The permission, or `None` for "any authenticated member".
    const REQUIRED: Option<Permission>;
}

/// Authentication plus the route's declared permission. Handlers reach tenant
/// data only through the [`TenantContext`] this yields.
pub struct Authorized<P: RoutePermission> {
    pub ctx: TenantContext,
    _permission: PhantomData<P>,
}

impl<P: RoutePermission> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ctx = match parts.extensions.get::<TenantContext>().cloned() {
            Some(ctx) => ctx,
            None => {
                let ctx = state.services.auth.authenticate(bearer(parts)?).await?;
                let span = tracing::Span::current();
                span.record("tenant_id", tracing::field::display(ctx.tenant_id()));
                span.record("user_id", tracing::field::display(ctx.principal().user_id));
                crate::rate_limit::enforce_principal(parts, state, &ctx).await?;
                parts.extensions.insert(ctx.clone());
                ctx
            }
        };
        if let Some(permission) = P::REQUIRED
            && let Err(denied) = ctx.require(permission)
        {
            // One event per refused request (already past the rate limits);
            // a failed write is logged and counted, the answer stays 403.
            let route = parts
                .extensions
                .get::<axum::extract::MatchedPath>()
                .map_or("unmatched", |path| path.as_str());
            let route = format!("{} {route}", parts.method);
            state
                .services
                .audit
                .record_denial(&ctx, permission, &route)
                .await;
            return Err(denied.into());
        }
        Ok(Self {
            ctx,
            _permission: PhantomData,
        })
    }
}

macro_rules! route_permissions {
    ($($(#[$doc:meta])* $name:ident => $value:expr;)+) => {
        /// Permission markers for [`Authorized`].
        pub mod perm {
            use super::*;
            $(
                $(#[$doc])*
                pub struct $name;
                impl RoutePermission for $name {
                    const REQUIRED: Option<Permission> = $value;
                }
            )+
        }
    };
}

route_permissions! {
    /// Any authenticated user or API key of a tenant.
    Member => None;
    UsersRead => Some(Permission::UsersRead);
    UsersManage => Some(Permission::UsersManage);
    RolesManage => Some(Permission::RolesManage);
    ApiKeysCreate => Some(Permission::ApiKeysCreate);
    TenantRead => Some(Permission::TenantRead);
    TenantManage => Some(Permission::TenantManage);
    ChatRead => Some(Permission::ChatRead);
    ChatWrite => Some(Permission::ChatWrite);
    EmbeddingsCreate => Some(Permission::EmbeddingsCreate);
    UsageRead => Some(Permission::UsageRead);
    MemoryRead => Some(Permission::MemoryRead);
    MemoryWrite => Some(Permission::MemoryWrite);
    DocumentsRead => Some(Permission::DocumentsRead);
    DocumentsWrite => Some(Permission::DocumentsWrite);
    BillingManage => Some(Permission::BillingManage);
    AuditRead => Some(Permission::AuditRead);
    ScimProvision => Some(Permission::ScimProvision);
}

/// The platform operator (operator key).
pub struct Operator(pub OperatorPrincipal);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = state
            .services
            .auth
            .authenticate_operator(bearer(parts)?)
            .await?;
        tracing::Span::current().record(
            "user_id",
            tracing::field::display(format!("operator:{}", principal.key_id)),
        );
        Ok(Operator(principal))
    }
}

/// The client's address and user agent.
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client(client_info(
            &parts.headers,
            &parts.extensions,
            state.config.trusted_proxy_hops,
        )))
    }
}

/// The client's address (see [`client_address`]) and user agent.
pub(crate) fn client_info(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    hops: usize,
) -> ClientInfo {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(300).collect());
    ClientInfo {
        ip: address_of(headers, extensions, hops),
        user_agent,
    }
}

/// The client's address: the peer, or with `hops` trusted proxies in front,
/// the entry they appended to `X-Forwarded-For` (never one a client wrote).
pub(crate) fn client_address(parts: &Parts, hops: usize) -> Option<String> {
    address_of(&parts.headers, &parts.extensions, hops)
}

fn address_of(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    hops: usize,
) -> Option<String> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let forwarded = (hops > 0)
        .then(|| headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()))
        .flatten()
        .and_then(|list| {
            let entries: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect();
            entries
                .len()
                .checked_sub(hops)
                .and_then(|i| entries.get(i))
                .map(|e| (*e).to_owned())
        })
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
    forwarded.or(peer)
}
