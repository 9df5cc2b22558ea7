//! In-process caches of tenant state read on every request (API-key
//! principals, model routes), kept correct across replicas by per-tenant
//! epochs in the shared counters (in process in embedded mode, Redis when
//! scaled out).
//!
//! A reader takes the tenant's epoch *before* loading from the store and
//! files the value under it; a writer bumps the epoch *after* its change
//! commits. A value loaded before a change therefore carries an older epoch
//! than the one any later request reads, and is reloaded: a role change or a
//! revoked key takes effect on the next request on every replica. Values also
//! expire after a short time, which bounds staleness if a bump was lost (the
//! counters were unreachable).
//!
//! An epoch of 0 means "never bumped, or forgotten" — as after the tenant's
//! counters were purged on deletion. Nothing is filed under 0: the first
//! reader bumps the epoch instead, so a value cached before the counters
//! were purged can never match again.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use karen_domain::TenantId;
use karen_domain::ports::{CacheKey, Counters};

/// What a cached value depends on; each topic has its own epoch per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Who may do what: tenant status, users, roles, API keys.
    Access,
    /// How models are served: the tenant's providers and aliases.
    Routes,
    /// Which embedding model serves the tenant's searches (re-embedding jobs).
    Embedding,
    /// The tenant's budgets (which calls must reserve before they run).
    Budgets,
}

impl Topic {
    fn name(self) -> &'static str {
        match self {
            Topic::Access => "access",
            Topic::Routes => "routes",
            Topic::Embedding => "embedding",
            Topic::Budgets => "budgets",
        }
    }

    fn key(self, tenant: TenantId) -> CacheKey {
        CacheKey::tenant(tenant, "epoch", self.name())
    }
}

/// How long an epoch counter lives after its first bump. Far longer than any
/// cached value, so a counter that expires and restarts at 0 can only make
/// cached values look stale, never fresh.
const EPOCH_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// The tenant's current epoch for a topic, or `None` when the counters cannot
/// be read (callers then bypass the cache).
pub async fn current_epoch(counters: &dyn Counters, tenant: TenantId, topic: Topic) -> Option<u64> {
    match counters.count(&topic.key(tenant)).await {
        Ok(epoch) => Some(epoch),
        Err(error) => {
            tracing::warn!(%error, tenant_id = %tenant, topic = topic.name(), "cache epoch unreadable; reading the store");
            None
        }
    }
}

/// Marks every cached value of the tenant's topic stale, on every replica.
/// Call it after the change committed.
pub async fn invalidate(counters: &dyn Counters, tenant: TenantId, topic: Topic) {
    if let Err(error) = counters.hit(&topic.key(tenant), EPOCH_WINDOW).await {
        // The change is committed; replicas see it when their copies expire.
        tracing::error!(%error, tenant_id = %tenant, topic = topic.name(), "could not invalidate cached state");
    }
}

#[derive(Clone)]
struct Entry<V> {
    tenant: TenantId,
    epoch: u64,
    stored: Instant,
    value: V,
}

/// Whether the process caches at all (`[cache] enabled`). Off only to
/// measure what the caches save: every lookup then goes to the store (and
/// still counts as a miss), and embeddings are always computed afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caching {
    pub enabled: bool,
}

impl Default for Caching {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// A bounded map of values filed under their tenant's epoch.
pub struct EpochCache<K, V> {
    name: &'static str,
    topic: Topic,
    ttl: Duration,
    enabled: bool,
    entries: quick_cache::sync::Cache<K, Entry<V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K, V> EpochCache<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    /// A cache of at most about `capacity` values, each kept at most `ttl`.
    pub fn new(name: &'static str, topic: Topic, capacity: usize, ttl: Duration) -> Self {
        Self {
            name,
            topic,
            ttl,
            enabled: true,
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The same cache, answering from the store on every lookup when caching
    /// is off.
    pub fn switched(mut self, caching: Caching) -> Self {
        self.enabled = caching.enabled;
        self
    }

    /// The cache's name (for metrics).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The topic whose epoch guards the values.
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// The value of `key`, from the cache when fresh, else from `load` (which
    /// reads the store; its errors are returned and never cached).
    pub async fn get_or_load<E, Fut>(
        &self,
        counters: &dyn Counters,
        tenant: TenantId,
        key: K,
        load: impl FnOnce() -> Fut,
    ) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let epoch = current_epoch(counters, tenant, self.topic).await;
        if let Some(value) = self.get(&key, tenant, epoch) {
            return Ok(value);
        }
        let value = load().await?;
        match epoch {
            // Start the tenant's epoch; the next reader files its value under it.
            Some(0) => invalidate(counters, tenant, self.topic).await,
            Some(_) => self.put(key, tenant, epoch, value.clone()),
            None => {}
        }
        Ok(value)
    }

    /// The value filed under `key` for `tenant` at `epoch`, if still fresh.
    fn get(&self, key: &K, tenant: TenantId, epoch: Option<u64>) -> Option<V> {
        let epoch = epoch.filter(|_| self.enabled);
        let found = epoch.filter(|epoch| *epoch > 0).and_then(|epoch| {
            self.entries.get(key).filter(|entry| {
                entry.tenant == tenant && entry.epoch == epoch && entry.stored.elapsed() < self.ttl
            })
        });
        crate::telemetry::cache_lookup(self.name, found.is_some());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found.map(|entry| entry.value)
    }

    /// Files a value loaded after reading `epoch` (nothing when it was unreadable or 0).
    fn put(&self, key: K, tenant: TenantId, epoch: Option<u64>, value: V) {
        if let Some(epoch) = epoch.filter(|epoch| *epoch > 0 && self.enabled) {
            let entry = Entry {
                tenant,
                epoch,
                stored: Instant::now(),
                value,
            };
            self.entries.insert(key, entry);
        }
    }

    /// Replaces the value of a key only if it is still filed (e.g. to record a
    /// write the holder made itself), keeping its epoch and age.
    pub fn update(&self, key: &K, change: impl FnOnce(&mut V)) {
        if let Some(mut entry) = self.entries.get(key) {
            change(&mut entry.value);
            self.entries.insert(key.clone(), entry);
        }
    }

    /// Lookups answered from the cache and lookups that went to the store.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_fresh_only_at_its_epoch_for_its_tenant() {
        let cache: EpochCache<u32, &str> =
            EpochCache::new("test", Topic::Access, 16, Duration::from_secs(60));
        let (a, b) = (TenantId::generate(), TenantId::generate());
        cache.put(1, a, Some(3), "three");
        assert_eq!(cache.get(&1, a, Some(3)), Some("three"));
        assert_eq!(cache.get(&1, a, Some(4)), None, "a later epoch");
        assert_eq!(cache.get(&1, b, Some(3)), None, "another tenant");
        assert_eq!(cache.get(&1, a, None), None, "epoch unknown");
        cache.put(2, a, None, "never filed");
        assert_eq!(cache.get(&2, a, Some(3)), None);
        cache.put(3, a, Some(0), "never filed at 0");
        assert_eq!(cache.get(&3, a, Some(0)), None);
        assert_eq!(cache.hits_and_misses(), (1, 5));
    }

    #[test]
    fn a_switched_off_cache_always_loads() {
        let cache: EpochCache<u32, u32> =
            EpochCache::new("test", Topic::Access, 16, Duration::from_secs(60))
                .switched(Caching { enabled: false });
        let tenant = TenantId::generate();
        cache.put(1, tenant, Some(1), 7);
        assert_eq!(cache.get(&1, tenant, Some(1)), None);
        assert_eq!(cache.hits_and_misses(), (0, 1));
    }

    #[test]
    fn values_expire() {
        let cache: EpochCache<u32, u32> =
            EpochCache::new("test", Topic::Routes, 16, Duration::ZERO);
        let tenant = TenantId::generate();
        cache.put(1, tenant, Some(1), 7);
        assert_eq!(cache.get(&1, tenant, Some(1)), None);
    }
}
