//! `[rate_limits]`: request rate limits per tenant, user, API key and client
//! address (sign-in routes), with the limits of each plan and the fail mode
//! used when Redis cannot be reached.

use std::collections::BTreeMap;
use std::sync::Arc;

use karen_app::rate_limits::{FailMode, RateLimitPolicy, RateLimitPorts};
use karen_cache::{MemoryRateLimiter, RedisCounters};
use karen_domain::clock::Clock;
use karen_domain::rate_limit::{Quota, RateLimits};
use serde::{Deserialize, Serialize};

/// `[rate_limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Apply rate limits (and send the `RateLimit` headers).
    pub enabled: bool,
    /// Platform defaults: `tenant`, `user`, `api_key`, each `{ requests, window_secs }`.
    pub defaults: RateLimits,
    /// Limits per plan name, over the defaults (`[rate_limits.plans.free]`).
    pub plans: BTreeMap<String, RateLimits>,
    /// Per client address on `POST /v1/auth/login`, `/v1/auth/refresh` and `/v1/signup`.
    pub auth_ip: Option<Quota>,
    /// When Redis does not answer: `local` (in-process, quota ÷ `replicas`),
    /// `open` (allow) or `closed` (refuse with 503).
    pub fail_mode: String,
    /// How many `karen serve` replicas share the limits (for `local`).
    pub replicas: u32,
}

fn per_minute(requests: u32) -> Option<Quota> {
    Quota::new(requests, 60).ok()
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            defaults: RateLimits {
                tenant: per_minute(6_000),
                user: per_minute(600),
                api_key: per_minute(1_200),
            },
            plans: BTreeMap::new(),
            auth_ip: per_minute(100),
            fail_mode: FailMode::Local.as_str().into(),
            replicas: 1,
        }
    }
}

impl RateLimitConfig {
    /// Problems, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = FailMode::parse(&self.fail_mode) {
            problems.push(format!("rate_limits.fail_mode: {error}"));
        }
        if !(1..=1000).contains(&self.replicas) {
            problems.push(format!(
                "rate_limits.replicas: {} is out of range (1–1000)",
                self.replicas
            ));
        }
        for plan in self.plans.keys() {
            if karen_domain::values::PlanName::parse(plan).is_err() {
                problems.push(format!(
                    "rate_limits.plans.{plan}: not a plan name (2–64 of a-z, 0-9, _ and -, starting with a letter)"
                ));
            }
        }
        problems
    }

    /// The services' policy.
    pub fn policy(&self) -> RateLimitPolicy {
        RateLimitPolicy {
            enabled: self.enabled,
            defaults: self.defaults,
            plans: self.plans.clone(),
            auth_ip: self.auth_ip,
            fail_mode: FailMode::parse(&self.fail_mode).unwrap_or_default(),
            replicas: self.replicas.max(1),
        }
    }
}

/// The limiters: Redis (with an in-process fallback) when `redis` is given,
/// else in-process only.
pub fn limiters(redis: Option<&RedisCounters>, clock: Arc<dyn Clock>) -> RateLimitPorts {
    let memory = Arc::new(MemoryRateLimiter::new(clock));
    match redis {
        Some(redis) => RateLimitPorts {
            shared: Arc::new(redis.rate_limiter()),
            fallback: Some(memory),
        },
        None => RateLimitPorts {
            shared: memory,
            fallback: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(RateLimitConfig::default().problems().is_empty());
        let config = RateLimitConfig {
            fail_mode: "sometimes".into(),
            replicas: 0,
            plans: BTreeMap::from([("Not A Plan".to_owned(), RateLimits::default())]),
            ..RateLimitConfig::default()
        };
        let problems = config.problems().join("\n");
        assert!(problems.contains("rate_limits.fail_mode"), "{problems}");
        assert!(problems.contains("rate_limits.replicas"), "{problems}");
        assert!(
            problems.contains("rate_limits.plans.Not A Plan"),
            "{problems}"
        );
    }
}
