//! Short-lived counters (login throttling now, rate limits later) and the
//! per-tenant namespace hook that every store implements.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Result, TenantId};

/// A cache key. Built only by these constructors, so every tenant key carries
/// its tenant in one fixed place (tenancy rule 1) and can be purged with it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// A key of one tenant: `t:{<tenant>}:<kind>:<part>`. The braces make it a
    /// Redis Cluster hash tag, so a tenant's keys live in one slot.
    pub fn tenant(tenant: TenantId, kind: &'static str, part: &str) -> Self {
        Self(format!("{}{kind}:{part}", Self::tenant_prefix(tenant)))
    }

    /// A key that belongs to no tenant (e.g. a client IP): `g:<kind>:<part>`.
    pub fn global(kind: &'static str, part: &str) -> Self {
        Self(format!("g:{kind}:{part}"))
    }

    /// The prefix shared by all of a tenant's keys.
    pub fn tenant_prefix(tenant: TenantId) -> String {
        format!("t:{{{tenant}}}:")
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.0)
    }
}

/// Fixed-window counters with expiry: in-process, or Redis when replicas share them.
#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// Adds one; the first hit starts a window of `window`. Returns the count in the window.
    async fn hit(&self, key: &CacheKey, window: Duration) -> Result<u64>;
    /// The count in the current window (0 when none).
    async fn count(&self, key: &CacheKey) -> Result<u64>;
    /// Forgets the counter (or mark).
    async fn clear(&self, key: &CacheKey) -> Result<()>;
    /// Stores a value that is forgotten after `ttl` (replacing any earlier one).
    /// Times are stored as values read against the injected clock; the TTL only
    /// bounds how long the key is kept.
    async fn put(&self, key: &CacheKey, value: u64, ttl: Duration) -> Result<()>;
    /// The stored value (`None` when absent or expired).
    async fn get(&self, key: &CacheKey) -> Result<Option<u64>>;
    /// How long a counter's window or a value has left (`None` when absent).
    async fn remaining(&self, key: &CacheKey) -> Result<Option<Duration>>;
    /// Removes every key of a tenant; returns how many.
    async fn purge_tenant(&self, tenant: TenantId) -> Result<u64>;
    /// How many keys a tenant has (used to prove a purge).
    async fn tenant_key_count(&self, tenant: TenantId) -> Result<u64>;
    /// Checks that the cache answers.
    async fn ping(&self) -> Result<()>;

    /// Creates a budget window's running total (`used` plus the live `holds`)
    /// unless it exists; kept for `ttl`. Returns whether this call created it
    /// (concurrent seeders, also on other replicas: exactly one wins).
    async fn budget_seed(
        &self,
        key: &CacheKey,
        used: i64,
        holds: &[BudgetHold],
        ttl: Duration,
    ) -> Result<bool>;
    /// Adds `hold` to the window if its total (used plus live holds, those
    /// expired at `now_ms` dropped first) stays within `limit`, atomically.
    async fn budget_reserve(
        &self,
        key: &CacheKey,
        hold: &BudgetHold,
        limit: i64,
        now_ms: i64,
    ) -> Result<BudgetReserve>;
    /// Sets the hold `id` to `keep` (removing it when 0; nothing if it is
    /// gone) and adds `used` to the window's settled total, atomically. Does
    /// nothing when the window is not seeded (its seed will read the store).
    async fn budget_release(&self, key: &CacheKey, id: &str, keep: i64, used: i64) -> Result<()>;
    /// The window's total, used plus live holds at `now_ms` (`None`: not seeded).
    async fn budget_total(&self, key: &CacheKey, now_ms: i64) -> Result<Option<i64>>;
}

/// An amount a call holds against a budget window until it settles or the
/// hold expires (a call whose process died).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetHold {
    /// The reservation's id.
    pub id: String,
    pub amount: i64,
    /// When the hold stops counting (milliseconds since the epoch, injected clock).
    pub expires_at_ms: i64,
}

/// The answer of [`Counters::budget_reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetReserve {
    /// Added; the window's total is now this.
    Held(i64),
    /// Not added: the window's total is this, and the hold does not fit.
    Refused(i64),
    /// The window has no running total yet: seed it, then try again.
    Unseeded,
}

/// A store that keeps per-tenant state outside the SQL store (cache, files,
/// indexes). Tenant creation provisions it; deletion destroys it.
#[async_trait]
pub trait TenantNamespace: Send + Sync + 'static {
    /// The store's name, for errors and reports.
    fn name(&self) -> &'static str;
    /// Creates whatever the tenant needs in this store (idempotent).
    async fn provision(&self, tenant: TenantId) -> Result<()>;
    /// Removes everything of the tenant from this store (idempotent).
    async fn destroy(&self, tenant: TenantId) -> Result<()>;
    /// Whether anything of the tenant remains in this store.
    async fn holds_data(&self, tenant: TenantId) -> Result<bool>;
}
