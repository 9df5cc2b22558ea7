//! Counters with expiry, in-process (embedded mode) or in Redis (shared by all
//! replicas), behind the [`Counters`] port. Both also act as a
//! [`TenantNamespace`] so that deleting a tenant removes its keys. The rate
//! limiters (GCRA) sit beside them, in-process and in Redis.

mod memory;
mod memory_limiter;
mod redis_counters;
mod redis_limiter;

pub use memory::MemoryCounters;
pub use memory_limiter::MemoryRateLimiter;
pub use redis_counters::{RedisCounters, RedisOptions};
pub use redis_limiter::RedisRateLimiter;

use std::sync::Arc;

use async_trait::async_trait;
use karen_domain::ports::{Counters, TenantNamespace};
use karen_domain::{Result, TenantId};

/// Exposes a [`Counters`] store as a tenant namespace (provision: nothing to do;
/// destroy: remove every key of the tenant).
pub struct CounterNamespace(pub Arc<dyn Counters>);

#[async_trait]
impl TenantNamespace for CounterNamespace {
    fn name(&self) -> &'static str {
        "cache"
    }

    async fn provision(&self, _tenant: TenantId) -> Result<()> {
        Ok(())
    }

    async fn destroy(&self, tenant: TenantId) -> Result<()> {
        self.0.purge_tenant(tenant).await.map(drop)
    }

    async fn holds_data(&self, tenant: TenantId) -> Result<bool> {
        Ok(self.0.tenant_key_count(tenant).await? > 0)
    }
}
