//! The in-process rate limiter (embedded mode, and the fallback when Redis is
//! unreachable).
//!
//! Not `governor`: its keyed limiter applies one quota to every key, while
//! each tenant here has quotas of its own (plan and overrides), and it reads
//! its own clock, not the injected [`Clock`] that tests move. The GCRA itself
//! is a few lines ([`karen_domain::rate_limit::gcra`]) shared with the Redis
//! script, so both backends answer alike, headers included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use karen_domain::Result;
use karen_domain::clock::Clock;
use karen_domain::ports::{CacheKey, RateLimiter};
use karen_domain::rate_limit::{Decision, Quota, gcra};

/// Above this many keys, those whose TAT has passed (fully recovered, so
/// equivalent to absent) are swept on the next request.
const SWEEP_ABOVE: usize = 50_000;

/// Rate-limit state in this process's memory: one TAT per key.
pub struct MemoryRateLimiter {
    clock: Arc<dyn Clock>,
    tats: Mutex<HashMap<String, i64>>,
}

impl MemoryRateLimiter {
    /// An empty limiter reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            tats: Mutex::new(HashMap::new()),
        }
    }

    fn now_micros(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(&self, key: &CacheKey, quota: Quota) -> Result<Decision> {
        let now = self.now_micros();
        let mut tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        if tats.len() > SWEEP_ABOVE {
            tats.retain(|_, tat| *tat > now);
        }
        let (decision, next) = gcra(now, tats.get(key.as_str()).copied(), quota);
        if let Some(next) = next {
            tats.insert(key.as_str().to_owned(), next);
        }
        Ok(decision)
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
