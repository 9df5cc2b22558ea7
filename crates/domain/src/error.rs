//! The one error type of Karen's domain and services. Each variant has a stable
//! string code (part of the API contract); the HTTP layer maps it to a status and
//! an RFC 9457 problem document in one place.

use std::time::Duration;

use crate::permission::Permission;

/// Result with Karen's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why authentication failed. Deliberately coarse: a client learns what to do
/// next, not which part of a credential was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential was presented.
    Missing,
    /// The credential is malformed, forged, revoked or unknown.
    Invalid,
    /// The credential was valid once and has expired.
    Expired,
    /// Email or password is wrong (or the account does not exist).
    BadCredentials,
    /// A second-factor code (TOTP or recovery code) is wrong, expired or already used.
    BadMfaCode,
}

/// Karen's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed but a value is not acceptable.
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    /// The request itself is malformed (a bad header, path or query parameter).
    #[error("{0}")]
    BadRequest(String),
    /// No or an unusable credential.
    #[error("{}", auth_message(*.0))]
    Unauthenticated(AuthFailure),
    /// The principal lacks a permission the action needs.
    #[error("this action needs the '{0}' permission")]
    PermissionDenied(Permission),
    /// The action is not allowed for this principal for a reason other than a
    /// missing permission (e.g. managing a user with more rights than oneself).
    #[error("{0}")]
    Forbidden(String),
    /// The tenant is suspended; its users and keys are refused.
    #[error("this organisation is suspended; contact the platform operator")]
    TenantSuspended,
    /// The organisation requires single sign-on for this account.
    #[error(
        "this organisation requires single sign-on; sign in through your identity provider at GET /v1/auth/sso/oidc/start?tenant=<organisation> (or /v1/auth/sso/saml/start?tenant=<organisation>)"
    )]
    SsoRequired,
    /// A single sign-on login was refused (the reason is audited too).
    #[error("single sign-on failed ({}): {}", .0.as_str(), .0.describe())]
    SsoFailed(crate::sso::SsoFailure),
    /// The user account is disabled.
    #[error("this account is disabled; contact an administrator of your organisation")]
    UserDisabled,
    /// No such resource, or it belongs to another tenant (indistinguishable on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The model named is not one this credential's tenant may use (OpenAI's
    /// `model_not_found`; the OpenAI-compatible embeddings route).
    #[error(
        "the model '{0}' does not exist or you do not have access to it; GET /v1/models lists the ones you may use"
    )]
    ModelNotFound(String),
    /// The request conflicts with existing state (duplicate email, slug taken…).
    #[error("{0}")]
    Conflict(String),
    /// A SCIM request the protocol refuses (RFC 7644 §3.12), with its `scimType`.
    #[error("{message}")]
    Scim {
        scim_type: crate::scim::ScimErrorType,
        message: String,
    },
    /// Too many failed logins; retry later.
    #[error(
        "too many failed login attempts; try again in {} seconds",
        retry_secs(retry_after)
    )]
    LoginThrottled { retry_after: Duration },
    /// The account is locked after repeated failed logins (an administrator can
    /// unlock it early).
    #[error(
        "this account is locked after repeated failed logins; try again in {} seconds or ask an administrator to unlock it",
        retry_secs(retry_after)
    )]
    AccountLocked { retry_after: Duration },
    /// A request rate limit is used up; retry after the given time.
    #[error(
        "{} is used up; try again in {} seconds",
        scope.describe(),
        retry_secs(retry_after)
    )]
    RateLimited {
        scope: crate::rate_limit::RateLimitScope,
        retry_after: Duration,
    },
    /// A feature that is switched off in this deployment.
    #[error("the '{0}' feature is disabled on this server")]
    FeatureDisabled(&'static str),
    /// A hard budget would be exceeded; nothing was sent upstream.
    #[error("{limit} is used up; it resets at {}", rfc3339(resets_at))]
    BudgetExceeded {
        limit: String,
        resets_at: time::OffsetDateTime,
        retry_after: Duration,
    },
    /// The model provider failed (after retries and fallback).
    #[error("{0}")]
    Upstream(String),
    /// A store or service Karen depends on is unreachable. The detail is for
    /// operators (CLI, logs); the HTTP layer does not show it to clients.
    #[error("{component} is unavailable: {detail}")]
    Unavailable {
        component: &'static str,
        detail: String,
    },
    /// A bug or an unexpected failure; details go to the log, never to the client.
    #[error("internal error")]
    Internal(String),
}

fn rfc3339(at: &time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

fn retry_secs(duration: &Duration) -> u64 {
    duration.as_secs().max(1)
}

fn auth_message(failure: AuthFailure) -> &'static str {
    match failure {
        AuthFailure::Missing => {
            "authentication required: send 'Authorization: Bearer <access token or API key>'"
        }
        AuthFailure::Invalid => "the credential is invalid or has been revoked",
        AuthFailure::Expired => "the access token has expired; refresh it or log in again",
        AuthFailure::BadCredentials => "email or password is incorrect",
        AuthFailure::BadMfaCode => {
            "the verification code is incorrect or was already used; enter the current code from your authenticator app, or an unused recovery code"
        }
    }
}

impl Error {
    /// A validation error for `field` (if known) with a message a person can act on.
    pub fn invalid(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    /// A SCIM protocol error of type `scim_type`.
    pub fn scim(scim_type: crate::scim::ScimErrorType, message: impl Into<String>) -> Self {
        Self::Scim {
            scim_type,
            message: message.into(),
        }
    }

    /// An unexpected failure; `detail` is logged, never shown to clients.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "validation_failed",
            Self::BadRequest(_) => "bad_request",
            Self::Unauthenticated(AuthFailure::Missing) => "unauthenticated",
            Self::Unauthenticated(AuthFailure::Invalid) => "invalid_token",
            Self::Unauthenticated(AuthFailure::Expired) => "token_expired",
            Self::Unauthenticated(AuthFailure::BadCredentials) => "invalid_credentials",
            Self::Unauthenticated(AuthFailure::BadMfaCode) => "invalid_mfa_code",
            Self::PermissionDenied(_) => "permission_denied",
            Self::Forbidden(_) => "forbidden",
            Self::TenantSuspended => "tenant_suspended",
            Self::UserDisabled => "user_disabled",
            Self::SsoRequired => "sso_required",
            Self::SsoFailed(_) => "sso_failed",
            Self::NotFound(_) => "not_found",
            Self::ModelNotFound(_) => "model_not_found",
            Self::Conflict(_) => "conflict",
            Self::Scim { scim_type, .. } => scim_type.code(),
            Self::LoginThrottled { .. } => "login_throttled",
            Self::AccountLocked { .. } => "account_locked",
            Self::RateLimited { .. } => "rate_limited",
            Self::FeatureDisabled(_) => "feature_disabled",
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::Upstream(_) => "upstream_error",
            Self::Unavailable { .. } => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_actionable_and_codes_stable() {
        let e = Error::LoginThrottled {
            retry_after: Duration::from_millis(300),
        };
        assert_eq!(e.code(), "login_throttled");
        assert!(e.to_string().contains("1 seconds"));
        assert_eq!(
            Error::PermissionDenied(Permission::UsersManage).to_string(),
            "this action needs the 'users:manage' permission"
        );
        assert_eq!(Error::internal("db exploded").to_string(), "internal error");
    }
}
