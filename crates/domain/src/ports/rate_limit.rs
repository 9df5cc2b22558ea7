//! The rate limiter port: one GCRA step against a key, in-process (embedded
//! mode) or in Redis (shared by every replica).

use async_trait::async_trait;

use crate::Result;
use crate::ports::CacheKey;
use crate::rate_limit::{Decision, Quota};

/// Applies a quota to a key atomically: counts the request when it is
/// allowed, never when it is refused.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// One request against `key` under `quota`.
    async fn acquire(&self, key: &CacheKey, quota: Quota) -> Result<Decision>;
    /// `memory` or `redis` (for logs).
    fn backend(&self) -> &'static str;
}
