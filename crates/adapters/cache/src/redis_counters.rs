//! Counters in Redis, shared by every replica. `hit` is one atomic Lua script
//! (INCR, and PEXPIRE on the first hit), so concurrent replicas count exactly.

use std::time::Duration;

use async_trait::async_trait;
use karen_domain::ports::{CacheKey, Counters};
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
        })
    }

    /// A rate limiter sharing this connection and key prefix.
    pub fn rate_limiter(&self) -> crate::RedisRateLimiter {
        crate::RedisRateLimiter::new(self.connection.clone(), self.prefix.clone())
    }

    fn key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
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
}
