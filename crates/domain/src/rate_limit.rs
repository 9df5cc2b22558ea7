//! Request rate limits: quotas per tenant, user, API key and client address,
//! and the GCRA (generic cell rate algorithm) that enforces them. The math
//! lives here, once: the in-process limiter runs it directly and the Redis
//! limiter runs the same steps in a Lua script against the server's clock.
//!
//! A quota of `requests` per `window` becomes an emission interval
//! `T = window / requests` and a burst span `requests × T`. Each key stores one
//! number, its theoretical arrival time (TAT). A request at `now` is allowed
//! when `max(TAT, now) + T - now <= span`, and then moves the TAT there. So a
//! fresh key admits `requests` at once, then one more every `T`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ports::CacheKey;
use crate::{ApiKeyId, Error, TenantId, UserId};

/// Largest number of requests a quota may allow per window.
pub const MAX_REQUESTS: u32 = 1_000_000;
/// Longest window of a quota (one day).
pub const MAX_WINDOW_SECS: u32 = 86_400;

const MICROS_PER_SEC: i64 = 1_000_000;

/// What a limit counts: a whole tenant, one user, one API key, or one client
/// address on the authentication routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitScope {
    Tenant,
    User,
    ApiKey,
    Ip,
}

impl RateLimitScope {
    /// The name used in headers (`RateLimit-Policy`), metrics and problems.
    pub const fn as_str(self) -> &'static str {
        match self {
            RateLimitScope::Tenant => "tenant",
            RateLimitScope::User => "user",
            RateLimitScope::ApiKey => "api_key",
            RateLimitScope::Ip => "ip",
        }
    }

    /// Words for a person reading the 429 problem.
    pub const fn describe(self) -> &'static str {
        match self {
            RateLimitScope::Tenant => "your organisation's request rate limit",
            RateLimitScope::User => "your request rate limit",
            RateLimitScope::ApiKey => "this API key's request rate limit",
            RateLimitScope::Ip => "the request rate limit of your address on sign-in routes",
        }
    }
}

impl fmt::Display for RateLimitScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one limit applies to. [`RateLimitSubject::key`] is the one function
/// that turns it into a cache key (tenancy rule 1): tenant subjects live under
/// the tenant's prefix (purged with the tenant, one Redis Cluster slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitSubject {
    Tenant(TenantId),
    User(TenantId, UserId),
    ApiKey(TenantId, ApiKeyId),
    Ip(std::net::IpAddr),
}

impl RateLimitSubject {
    /// The scope of the subject.
    pub const fn scope(self) -> RateLimitScope {
        match self {
            RateLimitSubject::Tenant(_) => RateLimitScope::Tenant,
            RateLimitSubject::User(..) => RateLimitScope::User,
            RateLimitSubject::ApiKey(..) => RateLimitScope::ApiKey,
            RateLimitSubject::Ip(_) => RateLimitScope::Ip,
        }
    }

    /// The key that holds the subject's GCRA state.
    pub fn key(self) -> CacheKey {
        match self {
            RateLimitSubject::Tenant(tenant) => CacheKey::tenant(tenant, "rl", "tenant"),
            RateLimitSubject::User(tenant, user) => {
                CacheKey::tenant(tenant, "rl", &format!("user:{user}"))
            }
            RateLimitSubject::ApiKey(tenant, key) => {
                CacheKey::tenant(tenant, "rl", &format!("key:{key}"))
            }
            RateLimitSubject::Ip(ip) => CacheKey::global("rl-ip", &ip.to_string()),
        }
    }
}

/// A quota: at most `requests` per `window_secs` (bursts up to `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "QuotaFields", into = "QuotaFields")]
pub struct Quota {
    requests: u32,
    window_secs: u32,
}

/// The serialised form of a [`Quota`] (checked on the way in).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaFields {
    pub requests: u32,
    pub window_secs: u32,
}

impl TryFrom<QuotaFields> for Quota {
    type Error = Error;

    fn try_from(fields: QuotaFields) -> Result<Self, Error> {
        Quota::new(fields.requests, fields.window_secs)
    }
}

impl From<Quota> for QuotaFields {
    fn from(quota: Quota) -> Self {
        QuotaFields {
            requests: quota.requests,
            window_secs: quota.window_secs,
        }
    }
}

impl Quota {
    /// A quota of `requests` (1–1,000,000) per `window_secs` (1–86,400).
    pub fn new(requests: u32, window_secs: u32) -> Result<Self, Error> {
        if !(1..=MAX_REQUESTS).contains(&requests) {
            return Err(Error::invalid(
                Some("requests"),
                format!("requests must be between 1 and {MAX_REQUESTS}"),
            ));
        }
        if !(1..=MAX_WINDOW_SECS).contains(&window_secs) {
            return Err(Error::invalid(
                Some("window_secs"),
                format!("window_secs must be between 1 and {MAX_WINDOW_SECS}"),
            ));
        }
        Ok(Self {
            requests,
            window_secs,
        })
    }

    /// Requests per window.
    pub const fn requests(self) -> u32 {
        self.requests
    }

    /// The window in seconds.
    pub const fn window_secs(self) -> u32 {
        self.window_secs
    }

    /// The emission interval `T`, in microseconds (at least 1).
    pub fn interval_micros(self) -> i64 {
        (i64::from(self.window_secs) * MICROS_PER_SEC / i64::from(self.requests)).max(1)
    }

    /// The burst span `requests × T`, in microseconds.
    pub fn span_micros(self) -> i64 {
        self.interval_micros() * i64::from(self.requests)
    }

    /// This quota shared out over `replicas` processes that cannot see each
    /// other (at least one request each), for the in-process fallback.
    pub fn divided(self, replicas: u32) -> Self {
        Self {
            requests: (self.requests / replicas.max(1)).max(1),
            window_secs: self.window_secs,
        }
    }
}

/// The outcome of one request against one quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The quota that was applied.
    pub quota: Quota,
    /// Requests that may still be made at once.
    pub remaining: u32,
    /// Until the whole quota is available again.
    pub reset: Duration,
    /// Until the next request would be allowed (zero when one is now).
    pub retry_after: Duration,
}

impl Decision {
    /// The decision a limiter reports as `(allowed, TAT - now)`, both backends alike.
    pub fn from_offset(allowed: bool, offset_micros: i64, quota: Quota) -> Self {
        let interval = quota.interval_micros();
        let span = quota.span_micros();
        let offset = offset_micros.max(0);
        let remaining = if offset >= span {
            0
        } else {
            u32::try_from((span - offset) / interval).unwrap_or(u32::MAX)
        };
        let retry = (offset + interval - span).max(0);
        Self {
            allowed,
            quota,
            remaining: remaining.min(quota.requests),
            reset: micros(offset),
            retry_after: micros(retry),
        }
    }

    /// An allowed request that nothing counted (the limiter was unreachable and
    /// the fail mode is open).
    pub fn uncounted(quota: Quota) -> Self {
        Self {
            allowed: true,
            quota,
            remaining: quota.requests,
            reset: Duration::ZERO,
            retry_after: Duration::ZERO,
        }
    }

    /// `reset` in whole seconds, rounded up (as headers carry it).
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset)
    }

    /// `retry_after` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(1)
    }
}

fn micros(value: i64) -> Duration {
    Duration::from_micros(u64::try_from(value).unwrap_or(0))
}

fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// One GCRA step: the decision for a request at `now_micros` against a key
/// whose stored TAT is `tat_micros`, and the TAT to store (`None`: leave it).
pub fn gcra(now_micros: i64, tat_micros: Option<i64>, quota: Quota) -> (Decision, Option<i64>) {
    let tat = tat_micros.map_or(now_micros, |tat| tat.max(now_micros));
    let new_tat = tat + quota.interval_micros();
    if new_tat - now_micros > quota.span_micros() {
        (Decision::from_offset(false, tat - now_micros, quota), None)
    } else {
        (
            Decision::from_offset(true, new_tat - now_micros, quota),
            Some(new_tat),
        )
    }
}

/// Quotas of one plan (or the platform defaults, or a tenant's overrides).
/// An unset field falls through to the next level: tenant override → plan →
/// platform default; unset everywhere means no limit of that scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// All requests of the tenant together.
    pub tenant: Option<Quota>,
    /// Each user's requests made with a session (access token).
    pub user: Option<Quota>,
    /// Each API key's requests.
    pub api_key: Option<Quota>,
}

impl RateLimits {
    /// These limits, with unset fields taken from `fallback`.
    pub fn or(self, fallback: RateLimits) -> RateLimits {
        RateLimits {
            tenant: self.tenant.or(fallback.tenant),
            user: self.user.or(fallback.user),
            api_key: self.api_key.or(fallback.api_key),
        }
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.tenant.is_none() && self.user.is_none() && self.api_key.is_none()
    }

    /// The quota of a scope (`Ip` is not a tenant's: `None`).
    pub fn quota(&self, scope: RateLimitScope) -> Option<Quota> {
        match scope {
            RateLimitScope::Tenant => self.tenant,
            RateLimitScope::User => self.user,
            RateLimitScope::ApiKey => self.api_key,
            RateLimitScope::Ip => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = MICROS_PER_SEC;

    fn quota(requests: u32, window: u32) -> Quota {
        Quota::new(requests, window).unwrap()
    }

    /// Runs requests at the given times (µs) against one key; returns the decisions.
    fn run(quota: Quota, times: &[i64]) -> Vec<Decision> {
        let mut tat = None;
        times
            .iter()
            .map(|now| {
                let (decision, next) = gcra(*now, tat, quota);
                if next.is_some() {
                    tat = next;
                }
                decision
            })
            .collect()
    }

    #[test]
    fn a_fresh_key_allows_a_full_burst_then_refuses() {
        let q = quota(10, 60);
        let decisions = run(q, &[0; 11]);
        for (i, d) in decisions.iter().take(10).enumerate() {
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - u32::try_from(i).unwrap());
        }
        let refused = decisions[10];
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        // One request comes back every 6 s; the whole quota after 60 s.
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        assert_eq!(refused.reset, Duration::from_secs(60));
        assert_eq!(refused.retry_after_secs(), 6);
    }

    #[test]
    fn moving_the_clock_gives_back_one_request_per_interval() {
        let q = quota(10, 60);
        let mut times = vec![0; 10];
        // 5.999 s later: still refused; at 6 s: one more; then refused again.
        times.extend([6 * SEC - 1000, 6 * SEC, 6 * SEC]);
        let decisions = run(q, &times);
        assert!(!decisions[10].allowed);
        assert_eq!(decisions[10].retry_after, Duration::from_micros(1000));
        assert_eq!(decisions[10].retry_after_secs(), 1);
        assert!(decisions[11].allowed);
        assert_eq!(decisions[11].remaining, 0);
        assert!(!decisions[12].allowed);
    }

    #[test]
    fn an_idle_key_recovers_the_whole_burst_but_no_more() {
        let q = quota(5, 10);
        let mut times = vec![0; 5];
        times.extend([3600 * SEC; 7]);
        let decisions = run(q, &times);
        let allowed_later = decisions[5..].iter().filter(|d| d.allowed).count();
        assert_eq!(
            allowed_later, 5,
            "idle time never banks more than the quota"
        );
        assert_eq!(decisions[5].remaining, 4);
        assert_eq!(decisions[5].reset, Duration::from_secs(2));
    }

    #[test]
    fn a_steady_rate_at_the_quota_is_never_refused() {
        let q = quota(100, 60);
        let interval = q.interval_micros();
        let times: Vec<i64> = (0..1000).map(|i| i * interval).collect();
        assert!(run(q, &times).iter().all(|d| d.allowed));
    }

    #[test]
    fn a_refused_request_does_not_consume_quota() {
        let q = quota(2, 10);
        let decisions = run(q, &[0, 0, 0, 0, 0, 5 * SEC]);
        assert!(decisions[..2].iter().all(|d| d.allowed));
        assert!(decisions[2..5].iter().all(|d| !d.allowed));
        assert!(decisions[5].allowed, "only the allowed ones moved the TAT");
    }

    #[test]
    fn uneven_divisions_still_allow_exactly_the_quota() {
        for (requests, window) in [(7, 60), (3, 1), (999_999, 1), (1_000_000, 86_400), (1, 1)] {
            let q = quota(requests, window);
            let times = vec![0; usize::try_from(requests).unwrap() + 1];
            let decisions = run(q, &times);
            let allowed = decisions.iter().filter(|d| d.allowed).count();
            assert_eq!(
                allowed,
                usize::try_from(requests).unwrap(),
                "{requests}/{window}s"
            );
        }
    }

    #[test]
    fn quotas_are_checked_and_divided_for_the_fallback() {
        assert!(Quota::new(0, 60).is_err());
        assert!(Quota::new(10, 0).is_err());
        assert!(Quota::new(MAX_REQUESTS + 1, 60).is_err());
        assert!(Quota::new(10, MAX_WINDOW_SECS + 1).is_err());
        assert_eq!(quota(100, 60).divided(3), quota(33, 60));
        assert_eq!(quota(2, 60).divided(5), quota(1, 60));
        assert_eq!(quota(2, 60).divided(0), quota(2, 60));
        let parsed: Quota = serde_json::from_str(r#"{"requests": 5, "window_secs": 1}"#).unwrap();
        assert_eq!(parsed, quota(5, 1));
        assert!(serde_json::from_str::<Quota>(r#"{"requests": 0, "window_secs": 1}"#).is_err());
    }

    #[test]
    fn limits_fall_through_field_by_field() {
        let platform = RateLimits {
            tenant: Some(quota(1000, 60)),
            user: Some(quota(100, 60)),
            api_key: Some(quota(200, 60)),
        };
        let plan = RateLimits {
            tenant: Some(quota(50, 60)),
            ..RateLimits::default()
        };
        let tenant = RateLimits {
            user: Some(quota(5, 1)),
            ..RateLimits::default()
        };
        let effective = tenant.or(plan.or(platform));
        assert_eq!(effective.tenant, Some(quota(50, 60)));
        assert_eq!(effective.user, Some(quota(5, 1)));
        assert_eq!(effective.api_key, Some(quota(200, 60)));
    }

    #[test]
    fn keys_carry_the_tenant_in_its_one_place() {
        let tenant = TenantId::generate();
        let user = UserId::generate();
        let key = RateLimitSubject::User(tenant, user).key();
        assert!(key.as_str().starts_with(&CacheKey::tenant_prefix(tenant)));
        assert_eq!(
            RateLimitSubject::Tenant(tenant).key().as_str(),
            format!("t:{{{tenant}}}:rl:tenant")
        );
        let ip = RateLimitSubject::Ip("192.0.2.7".parse().unwrap()).key();
        assert_eq!(ip.as_str(), "g:rl-ip:192.0.2.7");
    }
}
