//! Counters in Redis, shared by every replica. `hit` is one atomic Lua script
//! (INCR, and PEXPIRE on the first hit), so concurrent replicas count exactly.
//!
//! A budget window is a hash (`used`, `reserved`, and `m:<id>` = the amount
//! of each hold) and a sorted set of the holds by expiry (`<key>:h`); both
//! share the tenant's hash tag. Seeding, reserving and releasing are each
//! one Lua script, so replicas never interleave inside one.

use std::time::Duration;

use async_trait::async_trait;
use karen_domain::ports::{BudgetHold, BudgetReserve, CacheKey, Counters};
use karen_domain::{Error, Result, TenantId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Script};

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prepended to every key, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// Per-command timeout.
    pub timeout: Duration,
    /// PEM of the CA that signed the server's certificate, for a `rediss://`
    /// URL (`None`: the system's trusted roots).
    pub tls_root_cert: Option<Vec<u8>>,
}

/// Counters in Redis.
#[derive(Clone)]
pub struct RedisCounters {
    connection: ConnectionManager,
    prefix: String,
    hit_script: Script,
    budget: BudgetScripts,
}

/// The budget window scripts (see the module's doc).
#[derive(Clone)]
struct BudgetScripts {
    seed: Script,
    reserve: Script,
    release: Script,
    total: Script,
}

/// Drops the holds expired at ARGV[n] (`now_ms`) from KEYS[1]/KEYS[2].
/// Amounts are integers well inside 2^53 (budget limits are at most 10^18,
/// but one call's amount and a window's total stay far below it in practice;
/// HINCRBY itself is exact).
const BUDGET_EXPIRE: &str = r"
local function expire(now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  if #gone == 0 then return end
  for _, id in ipairs(gone) do
    local amount = redis.call('HGET', KEYS[1], 'm:' .. id)
    if amount then
      redis.call('HINCRBY', KEYS[1], 'reserved', 0 - tonumber(amount))
      redis.call('HDEL', KEYS[1], 'm:' .. id)
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
local function total()
  return tonumber(redis.call('HGET', KEYS[1], 'used') or '0') + tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
end
";

/// ARGV: ttl_ms, used, then (id, amount, expires_ms) per hold. 1 if created.
const BUDGET_SEED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
local reserved = 0
for i = 3, #ARGV, 3 do
  redis.call('HSET', KEYS[1], 'm:' .. ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
  reserved = reserved + tonumber(ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'used', ARGV[2], 'reserved', string.format('%d', reserved))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if #ARGV > 2 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
return 1";

/// ARGV: id, amount, limit, expires_ms, now_ms. {state, total}: state 1
/// held, 0 refused, -1 not seeded.
const BUDGET_RESERVE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
expire(ARGV[5])
local amount = tonumber(ARGV[2])
local before = redis.call('HGET', KEYS[1], 'm:' .. ARGV[1])
if before then
  redis.call('HINCRBY', KEYS[1], 'reserved', 0 - tonumber(before))
end
local current = total()
if current + amount > tonumber(ARGV[3]) then
  if before then redis.call('HINCRBY', KEYS[1], 'reserved', before) end
  return {0, current}
end
redis.call('HSET', KEYS[1], 'm:' .. ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {1, current + amount}";

/// ARGV: id, keep, used.
const BUDGET_RELEASE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local amount = redis.call('HGET', KEYS[1], 'm:' .. ARGV[1])
if amount then
  local keep = tonumber(ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'reserved', keep - tonumber(amount))
  if keep > 0 then
    redis.call('HSET', KEYS[1], 'm:' .. ARGV[1], ARGV[2])
  else
    redis.call('HDEL', KEYS[1], 'm:' .. ARGV[1])
    redis.call('ZREM', KEYS[2], ARGV[1])
  end
end
if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[1], 'used', ARGV[3]) end
return 1";

/// ARGV: now_ms. The total, or -1 when not seeded.
const BUDGET_TOTAL: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
expire(ARGV[1])
return total()";

impl BudgetScripts {
    fn new() -> Self {
        let with_helpers = |body: &str| Script::new(&format!("{BUDGET_EXPIRE}{body}"));
        Self {
            seed: Script::new(BUDGET_SEED),
            reserve: with_helpers(BUDGET_RESERVE),
            release: Script::new(BUDGET_RELEASE),
            total: with_helpers(BUDGET_TOTAL),
        }
    }
}

const HIT: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count";

fn unavailable(error: redis::RedisError) -> Error {
    Error::Unavailable {
        component: "redis",
        detail: error.to_string(),
    }
}

impl RedisCounters {
    /// Connects; fails if Redis does not answer within the timeout.
    pub async fn connect(options: &RedisOptions) -> Result<Self> {
        let client = match &options.tls_root_cert {
            None => redis::Client::open(options.url.as_str()),
            Some(root_cert) => redis::Client::build_with_tls(
                options.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert.clone()),
                },
            ),
        }
        .map_err(|e| Error::invalid(Some("redis.url"), format!("not a usable Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            connection,
            prefix: options.key_prefix.clone(),
            hit_script: Script::new(HIT),
            budget: BudgetScripts::new(),
        })
    }

    /// A rate limiter sharing this connection and key prefix.
    pub fn rate_limiter(&self) -> crate::RedisRateLimiter {
        crate::RedisRateLimiter::new(self.connection.clone(), self.prefix.clone())
    }

    fn key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    /// A budget window's hash and its holds' sorted set.
    fn window_keys(&self, key: &CacheKey) -> (String, String) {
        let hash = self.key(key);
        let holds = format!("{hash}:h");
        (hash, holds)
    }

    fn tenant_pattern(&self, tenant: TenantId) -> String {
        // Tenant ids are UUIDs we format ourselves: no glob characters to escape
        // besides the prefix, which is operator configuration.
        format!(
            "{}{}*",
            glob_escape(&self.prefix),
            CacheKey::tenant_prefix(tenant)
        )
    }

    async fn tenant_keys(&self, tenant: TenantId) -> Result<Vec<String>> {
        let mut connection = self.connection.clone();
        let pattern = self.tenant_pattern(tenant);
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl Counters for RedisCounters {
    #[tracing::instrument(name = "cache.hit", skip_all, fields(db.system = "redis", db.operation = "EVALSHA"))]
    async fn hit(&self, key: &CacheKey, window: Duration) -> Result<u64> {
        let mut connection = self.connection.clone();
        let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        self.hit_script
            .key(self.key(key))
            .arg(millis)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    #[tracing::instrument(name = "cache.count", skip_all, fields(db.system = "redis", db.operation = "GET"))]
    async fn count(&self, key: &CacheKey) -> Result<u64> {
        let mut connection = self.connection.clone();
        let value: Option<u64> = connection.get(self.key(key)).await.map_err(unavailable)?;
        Ok(value.unwrap_or(0))
    }

    #[tracing::instrument(name = "cache.clear", skip_all, fields(db.system = "redis", db.operation = "DEL"))]
    async fn clear(&self, key: &CacheKey) -> Result<()> {
        let mut connection = self.connection.clone();
        connection
            .del::<_, ()>(self.key(key))
            .await
            .map_err(unavailable)
    }

    #[tracing::instrument(name = "cache.put", skip_all, fields(db.system = "redis", db.operation = "SET"))]
    async fn put(&self, key: &CacheKey, value: u64, ttl: Duration) -> Result<()> {
        let mut connection = self.connection.clone();
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    #[tracing::instrument(name = "cache.get", skip_all, fields(db.system = "redis", db.operation = "GET"))]
    async fn get(&self, key: &CacheKey) -> Result<Option<u64>> {
        let mut connection = self.connection.clone();
        connection.get(self.key(key)).await.map_err(unavailable)
    }

    #[tracing::instrument(name = "cache.remaining", skip_all, fields(db.system = "redis", db.operation = "PTTL"))]
    async fn remaining(&self, key: &CacheKey) -> Result<Option<Duration>> {
        let mut connection = self.connection.clone();
        // PTTL: -2 when absent, -1 when without expiry (never set by Karen).
        let millis: i64 = redis::cmd("PTTL")
            .arg(self.key(key))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(millis).ok().map(Duration::from_millis))
    }

    #[tracing::instrument(name = "cache.purge_tenant", skip_all, fields(db.system = "redis", db.operation = "UNLINK"))]
    async fn purge_tenant(&self, tenant: TenantId) -> Result<u64> {
        let keys = self.tenant_keys(tenant).await?;
        let mut connection = self.connection.clone();
        let mut removed = 0u64;
        for chunk in keys.chunks(500) {
            let n: u64 = connection.unlink(chunk).await.map_err(unavailable)?;
            removed += n;
        }
        Ok(removed)
    }

    async fn tenant_key_count(&self, tenant: TenantId) -> Result<u64> {
        Ok(u64::try_from(self.tenant_keys(tenant).await?.len()).unwrap_or(u64::MAX))
    }

    async fn ping(&self) -> Result<()> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    #[tracing::instrument(name = "cache.budget_seed", skip_all, fields(db.system = "redis", db.operation = "EVALSHA"))]
    async fn budget_seed(
        &self,
        key: &CacheKey,
        used: i64,
        holds: &[BudgetHold],
        ttl: Duration,
    ) -> Result<bool> {
        let mut connection = self.connection.clone();
        let (hash, set) = self.window_keys(key);
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.budget.seed.key(hash);
        invocation.key(set).arg(millis).arg(used);
        for hold in holds {
            invocation
                .arg(hold.id.as_str())
                .arg(hold.amount)
                .arg(hold.expires_at_ms);
        }
        let created: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(created == 1)
    }

    #[tracing::instrument(name = "cache.budget_reserve", skip_all, fields(db.system = "redis", db.operation = "EVALSHA"))]
    async fn budget_reserve(
        &self,
        key: &CacheKey,
        hold: &BudgetHold,
        limit: i64,
        now_ms: i64,
    ) -> Result<BudgetReserve> {
        let mut connection = self.connection.clone();
        let (hash, set) = self.window_keys(key);
        let (state, total): (i64, i64) = self
            .budget
            .reserve
            .key(hash)
            .key(set)
            .arg(hold.id.as_str())
            .arg(hold.amount)
            .arg(limit)
            .arg(hold.expires_at_ms)
            .arg(now_ms)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(match state {
            1 => BudgetReserve::Held(total),
            0 => BudgetReserve::Refused(total),
            _ => BudgetReserve::Unseeded,
        })
    }

    #[tracing::instrument(name = "cache.budget_release", skip_all, fields(db.system = "redis", db.operation = "EVALSHA"))]
    async fn budget_release(&self, key: &CacheKey, id: &str, keep: i64, used: i64) -> Result<()> {
        let mut connection = self.connection.clone();
        let (hash, set) = self.window_keys(key);
        self.budget
            .release
            .key(hash)
            .key(set)
            .arg(id)
            .arg(keep)
            .arg(used)
            .invoke_async::<i64>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    #[tracing::instrument(name = "cache.budget_total", skip_all, fields(db.system = "redis", db.operation = "EVALSHA"))]
    async fn budget_total(&self, key: &CacheKey, now_ms: i64) -> Result<Option<i64>> {
        let mut connection = self.connection.clone();
        let (hash, set) = self.window_keys(key);
        let total: i64 = self
            .budget
            .total
            .key(hash)
            .key(set)
            .arg(now_ms)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok((total >= 0).then_some(total))
    }
}
