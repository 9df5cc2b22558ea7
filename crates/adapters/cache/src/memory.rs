//! In-process counters for a single `karen serve`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use karen_domain::clock::Clock;
use karen_domain::ports::{CacheKey, Counters};
use karen_domain::{Result, TenantId};
use time::OffsetDateTime;

/// Above this many entries, expired ones are swept on the next hit.
const SWEEP_ABOVE: usize = 10_000;

/// Counters held in this process's memory.
pub struct MemoryCounters {
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<String, (u64, OffsetDateTime)>>,
}

impl MemoryCounters {
    /// Empty counters reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, OffsetDateTime)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn hit(&self, key: &CacheKey, window: Duration) -> Result<u64> {
        let now = self.clock.now();
        let mut entries = self.entries();
        if entries.len() > SWEEP_ABOVE {
            entries.retain(|_, (_, expires)| *expires > now);
        }
        let entry = entries
            .entry(key.as_str().to_owned())
            .or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 += 1;
        Ok(entry.0)
    }

    async fn count(&self, key: &CacheKey) -> Result<u64> {
        let now = self.clock.now();
        Ok(self
            .entries()
            .get(key.as_str())
            .filter(|(_, expires)| *expires > now)
            .map_or(0, |(n, _)| *n))
    }

    async fn clear(&self, key: &CacheKey) -> Result<()> {
        self.entries().remove(key.as_str());
        Ok(())
    }

    async fn put(&self, key: &CacheKey, value: u64, ttl: Duration) -> Result<()> {
        let expires = self.clock.now() + ttl;
        self.entries()
            .insert(key.as_str().to_owned(), (value, expires));
        Ok(())
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<u64>> {
        let now = self.clock.now();
        Ok(self
            .entries()
            .get(key.as_str())
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| *value))
    }

    async fn remaining(&self, key: &CacheKey) -> Result<Option<Duration>> {
        let now = self.clock.now();
        Ok(self
            .entries()
            .get(key.as_str())
            .filter(|(_, expires)| *expires > now)
            .and_then(|(_, expires)| Duration::try_from(*expires - now).ok()))
    }

    async fn purge_tenant(&self, tenant: TenantId) -> Result<u64> {
        let prefix = CacheKey::tenant_prefix(tenant);
        let now = self.clock.now();
        let mut removed_live = 0u64;
        self.entries().retain(|key, (_, expires)| {
            let of_tenant = key.starts_with(&prefix);
            if of_tenant && *expires > now {
                removed_live += 1;
            }
            !of_tenant
        });
        Ok(removed_live)
    }

    async fn tenant_key_count(&self, tenant: TenantId) -> Result<u64> {
        let prefix = CacheKey::tenant_prefix(tenant);
        let now = self.clock.now();
        let entries = self.entries();
        let live = entries
            .iter()
            .filter(|(key, (_, expires))| key.starts_with(&prefix) && *expires > now);
        Ok(u64::try_from(live.count()).unwrap_or(u64::MAX))
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
