//! Rate limits on the request path. Tenant limits are checked right after
//! authentication, inside the [`crate::extract::Authorized`] extractor, so
//! before any handler runs; sign-in routes check the client address first
//! with [`SignInRateLimit`], before any credential is looked at. The layer
//! [`rate_limit_headers`] then writes what was checked as the IETF draft's
//! structured fields (draft-ietf-httpapi-ratelimit-headers-12):
//!
//! ```text
//! RateLimit-Policy: "user";q=600;w=60, "tenant";q=6000;w=60
//! RateLimit: "user";r=599;t=1, "tenant";r=5999;t=1
//! ```
//!
//! `q` requests per `w` seconds; `r` requests left now; `t` seconds until the
//! whole quota is back. A refusal is a 429 `rate_limited` problem with
//! `Retry-After` (OpenAI routes reshape it to `rate_limit_error`).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use karen_app::rate_limits::Verdict;
use karen_domain::TenantContext;
use karen_domain::rate_limit::{Decision, RateLimitScope};

use crate::AppState;
use crate::error::ApiError;

/// `RateLimit-Policy`: the quotas that applied.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of them.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Where the checks of a request are left for [`rate_limit_headers`].
#[derive(Clone, Default)]
struct Checks(Arc<Mutex<Vec<(RateLimitScope, Decision)>>>);

impl Checks {
    fn record(parts: &Parts, verdict: &Verdict) {
        if let Some(checks) = parts.extensions.get::<Checks>() {
            checks
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(verdict.checks.iter().copied());
        }
    }

    fn take(&self) -> Vec<(RateLimitScope, Decision)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Adds the `RateLimit-Policy` and `RateLimit` headers of every limit the
/// request was held against (none when it was held against none).
pub async fn rate_limit_headers(mut request: Request, next: Next) -> Response {
    let checks = Checks::default();
    request.extensions_mut().insert(checks.clone());
    let mut response = next.run(request).await;
    write_headers(response.headers_mut(), &checks.take());
    response
}

fn write_headers(headers: &mut HeaderMap, checks: &[(RateLimitScope, Decision)]) {
    if checks.is_empty() {
        return;
    }
    let mut policy = String::new();
    let mut state = String::new();
    for (i, (scope, decision)) in checks.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        let _ = write!(
            policy,
            "{separator}\"{scope}\";q={};w={}",
            decision.quota.requests(),
            decision.quota.window_secs()
        );
        let _ = write!(
            state,
            "{separator}\"{scope}\";r={};t={}",
            decision.remaining,
            decision.reset_secs()
        );
    }
    for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, state)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// Holds an authenticated request against its tenant's limits.
pub(crate) async fn enforce_principal(
    parts: &Parts,
    state: &AppState,
    ctx: &TenantContext,
) -> Result<(), ApiError> {
    let verdict = state.services.rate_limits.check_principal(ctx).await?;
    Checks::record(parts, &verdict);
    verdict.into_result()?;
    Ok(())
}

/// The per-address limit of sign-in routes (login, refresh, signup), checked
/// before the body is read or any credential looked at.
pub struct SignInRateLimit;

impl FromRequestParts<AppState> for SignInRateLimit {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let address = crate::extract::client_address(parts, state.config.trusted_proxy_hops)
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
        // No address (not served over TCP, e.g. in-process calls): nothing to key on.
        let Some(ip) = address else {
            return Ok(SignInRateLimit);
        };
        let verdict = state.services.rate_limits.check_ip(ip).await?;
        Checks::record(parts, &verdict);
        verdict.into_result()?;
        Ok(SignInRateLimit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karen_domain::rate_limit::Quota;

    #[test]
    fn headers_are_structured_field_lists_in_check_order() {
        let user = Quota::new(600, 60).unwrap();
        let tenant = Quota::new(6000, 60).unwrap();
        let checks = [
            (
                RateLimitScope::User,
                Decision::from_offset(true, 100_000, user),
            ),
            (
                RateLimitScope::Tenant,
                Decision::from_offset(true, 10_000, tenant),
            ),
        ];
        let mut headers = HeaderMap::new();
        write_headers(&mut headers, &checks);
        assert_eq!(
            headers[RATELIMIT_POLICY],
            "\"user\";q=600;w=60, \"tenant\";q=6000;w=60"
        );
        assert_eq!(
            headers[RATELIMIT],
            "\"user\";r=599;t=1, \"tenant\";r=5999;t=1"
        );
        let mut none = HeaderMap::new();
        write_headers(&mut none, &[]);
        assert!(none.is_empty());
    }
}
