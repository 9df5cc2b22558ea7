//! The one place where errors become HTTP responses: RFC 9457
//! `application/problem+json` with a stable `code`. Client mistakes are 4xx
//! with a message a person can act on; internal details only reach the log.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use karen_domain::Error;
use karen_domain::error::AuthFailure;
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:karen:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence, and what to do about it.
    pub detail: String,
    /// A stable, machine-readable code (see docs/api.md).
    pub code: String,
    /// The request field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The permission the action needs (for `permission_denied`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_permission: Option<String>,
    /// Seconds to wait before retrying (also sent as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The request id (also in the `x-request-id` header and the logs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub enum ApiError {
    /// A domain or service error.
    Domain(Error),
    /// A protocol-level problem found before any service ran.
    Http {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError::Domain(error)
    }
}

impl ApiError {
    /// A protocol-level problem.
    pub fn http(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Http {
            status,
            code,
            detail: detail.into(),
        }
    }

    /// Renames the field of a validation error to the request's own key (value
    /// types name themselves, e.g. `email`, where a body says `owner_email`).
    pub fn rename_field(error: Error, renames: &[(&str, &str)]) -> Error {
        match error {
            Error::Invalid {
                field: Some(field),
                message,
            } => {
                let renamed = renames
                    .iter()
                    .find(|(from, _)| *from == field)
                    .map_or(field, |(_, to)| (*to).to_owned());
                Error::Invalid {
                    field: Some(renamed),
                    message,
                }
            }
            other => other,
        }
    }

    /// `bad_request` with a message.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::Domain(Error::BadRequest(detail.into()))
    }
}

/// The HTTP status of each domain error (one table, one place).
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::Unauthenticated(_) | Error::SsoFailed(_) => StatusCode::UNAUTHORIZED,
        Error::PermissionDenied(_)
        | Error::Forbidden(_)
        | Error::TenantSuspended
        | Error::UserDisabled
        | Error::SsoRequired => StatusCode::FORBIDDEN,
        Error::NotFound(_) | Error::ModelNotFound(_) | Error::FeatureDisabled(_) => {
            StatusCode::NOT_FOUND
        }
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Scim { scim_type, .. } => {
            StatusCode::from_u16(scim_type.status()).unwrap_or(StatusCode::BAD_REQUEST)
        }
        Error::LoginThrottled { .. } | Error::BudgetExceeded { .. } | Error::RateLimited { .. } => {
            StatusCode::TOO_MANY_REQUESTS
        }
        Error::AccountLocked { .. } => StatusCode::LOCKED,
        Error::Upstream(_) => StatusCode::BAD_GATEWAY,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn title_of(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("Error").to_owned()
}

fn retry_secs(duration: Duration) -> u64 {
    duration.as_secs().max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, problem, www_authenticate) = match self {
            ApiError::Domain(error) => {
                let status = status_of(&error);
                match &error {
                    Error::Internal(detail) => tracing::error!(%detail, "internal error"),
                    Error::Unavailable { component, detail } => {
                        tracing::warn!(component, %detail, "dependency unavailable");
                    }
                    _ => {}
                }
                let retry_after = match &error {
                    Error::LoginThrottled { retry_after }
                    | Error::AccountLocked { retry_after }
                    | Error::BudgetExceeded { retry_after, .. }
                    | Error::RateLimited { retry_after, .. } => Some(retry_secs(*retry_after)),
                    Error::Unavailable { .. } => Some(5),
                    _ => None,
                };
                let www = match &error {
                    Error::Unauthenticated(AuthFailure::Expired) => {
                        Some("Bearer error=\"invalid_token\", error_description=\"expired\"")
                    }
                    Error::Unauthenticated(AuthFailure::Invalid) => {
                        Some("Bearer error=\"invalid_token\"")
                    }
                    Error::Unauthenticated(_) => Some("Bearer"),
                    _ => None,
                };
                let problem = Problem {
                    problem_type: format!("urn:karen:problem:{}", error.code()),
                    title: title_of(status),
                    status: status.as_u16(),
                    detail: match &error {
                        Error::Unavailable { component, .. } => {
                            format!("{component} is unavailable; try again shortly")
                        }
                        other => other.to_string(),
                    },
                    code: error.code().to_owned(),
                    field: match &error {
                        Error::Invalid { field, .. } => field.clone(),
                        Error::ModelNotFound(_) => Some("model".to_owned()),
                        _ => None,
                    },
                    required_permission: match &error {
                        Error::PermissionDenied(p) => Some(p.as_str().to_owned()),
                        _ => None,
                    },
                    retry_after,
                    request_id: None,
                };
                (status, problem, www)
            }
            ApiError::Http {
                status,
                code,
                detail,
            } => (
                status,
                Problem {
                    problem_type: format!("urn:karen:problem:{code}"),
                    title: title_of(status),
                    status: status.as_u16(),
                    detail,
                    code: code.to_owned(),
                    field: None,
                    required_permission: None,
                    retry_after: None,
                    request_id: None,
                },
                None,
            ),
        };
        problem_response(status, problem, www_authenticate)
    }
}

/// Renders a problem, stamped with the current request's id.
pub fn problem_response(
    status: StatusCode,
    mut problem: Problem,
    www_authenticate: Option<&'static str>,
) -> Response {
    problem.request_id = crate::middleware::current_request_id();
    let retry_after = problem.retry_after;
    let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(secs) = retry_after
        && let Ok(value) = HeaderValue::from_str(&secs.to_string())
    {
        headers.insert(header::RETRY_AFTER, value);
    }
    if let Some(value) = www_authenticate {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
    }
    response
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
