//! The Redis rate limiter: the GCRA step of
//! [`karen_domain::rate_limit::gcra`] as one Lua script, atomic, on the Redis
//! server's clock (`TIME`), so every replica shares one limit and replicas'
//! clock skew does not matter.

use async_trait::async_trait;
use karen_domain::ports::{CacheKey, RateLimiter};
use karen_domain::rate_limit::{Decision, Quota};
use karen_domain::{Error, Result};
use redis::Script;
use redis::aio::ConnectionManager;

/// KEYS[1]: the key. ARGV[1]: emission interval T (µs). ARGV[2]: burst span (µs).
/// Returns {allowed (0|1), TAT - now (µs)}. The TAT is stored as an integer
/// string (`%d`: Lua 5.1 would print a 16-digit number in exponent form) with
/// an expiry of when it has fully recovered, after which absence means the same.
const GCRA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > span then
  return {0, tat - now}
end
local ttl_ms = math.floor((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return {1, new_tat - now}";

/// GCRA state in Redis.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    prefix: String,
    script: Script,
}

impl RedisRateLimiter {
    /// A limiter over an open connection; `prefix` is prepended to every key.
    pub fn new(connection: ConnectionManager, prefix: String) -> Self {
        Self {
            connection,
            prefix,
            script: Script::new(GCRA),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    #[tracing::instrument(name = "cache.rate_limit", skip_all, fields(db.system = "redis", db.operation = "EVALSHA"))]
    async fn acquire(&self, key: &CacheKey, quota: Quota) -> Result<Decision> {
        let mut connection = self.connection.clone();
        let (allowed, offset): (i64, i64) = self
            .script
            .key(format!("{}{}", self.prefix, key.as_str()))
            .arg(quota.interval_micros())
            .arg(quota.span_micros())
            .invoke_async(&mut connection)
            .await
            .map_err(|error| Error::Unavailable {
                component: "redis",
                detail: error.to_string(),
            })?;
        Ok(Decision::from_offset(allowed == 1, offset, quota))
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
