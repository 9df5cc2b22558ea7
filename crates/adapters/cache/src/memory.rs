//! In-process counters for a single `karen serve`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use karen_domain::clock::Clock;
use karen_domain::ports::{BudgetHold, BudgetReserve, CacheKey, Counters};
use karen_domain::{Result, TenantId};
use time::OffsetDateTime;

/// Above this many entries, expired ones are swept on the next hit.
const SWEEP_ABOVE: usize = 10_000;

/// Counters held in this process's memory.
pub struct MemoryCounters {
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<String, (u64, OffsetDateTime)>>,
    windows: Mutex<HashMap<String, Window>>,
}

/// A budget window's running total: what settled calls used, and the holds
/// of calls in flight (amount, expiry in ms).
struct Window {
    used: i64,
    reserved: i64,
    holds: HashMap<String, (i64, i64)>,
    /// The earliest expiry among the holds (`i64::MAX`: none).
    next_expiry: i64,
    /// When the window itself is forgotten.
    expires: OffsetDateTime,
}

impl Window {
    /// Drops the holds that expired at `now_ms`.
    fn expire(&mut self, now_ms: i64) {
        if self.next_expiry > now_ms {
            return;
        }
        let mut next = i64::MAX;
        let mut dropped = 0;
        self.holds.retain(|_, (amount, expires)| {
            if *expires <= now_ms {
                dropped += *amount;
                false
            } else {
                next = next.min(*expires);
                true
            }
        });
        self.reserved -= dropped;
        self.next_expiry = next;
    }

    fn total(&self) -> i64 {
        self.used.saturating_add(self.reserved)
    }
}

impl MemoryCounters {
    /// Empty counters reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            entries: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// The window at `key` unless absent or expired.
    fn live<'a>(
        &self,
        windows: &'a mut HashMap<String, Window>,
        key: &CacheKey,
    ) -> Option<&'a mut Window> {
        let now = self.clock.now();
        windows
            .get_mut(key.as_str())
            .filter(|window| window.expires > now)
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        self.windows().retain(|key, window| {
            let of_tenant = key.starts_with(&prefix);
            if of_tenant && window.expires > now {
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
            .filter(|(key, (_, expires))| key.starts_with(&prefix) && *expires > now)
            .count();
        drop(entries);
        let windows = self
            .windows()
            .iter()
            .filter(|(key, window)| key.starts_with(&prefix) && window.expires > now)
            .count();
        Ok(u64::try_from(live + windows).unwrap_or(u64::MAX))
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn budget_seed(
        &self,
        key: &CacheKey,
        used: i64,
        holds: &[BudgetHold],
        ttl: Duration,
    ) -> Result<bool> {
        let now = self.clock.now();
        let mut windows = self.windows();
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, window| window.expires > now);
        }
        if windows
            .get(key.as_str())
            .is_some_and(|window| window.expires > now)
        {
            return Ok(false);
        }
        let mut window = Window {
            used,
            reserved: 0,
            holds: HashMap::with_capacity(holds.len()),
            next_expiry: i64::MAX,
            expires: now + ttl,
        };
        for hold in holds {
            window.reserved += hold.amount;
            window.next_expiry = window.next_expiry.min(hold.expires_at_ms);
            window
                .holds
                .insert(hold.id.clone(), (hold.amount, hold.expires_at_ms));
        }
        windows.insert(key.as_str().to_owned(), window);
        Ok(true)
    }

    async fn budget_reserve(
        &self,
        key: &CacheKey,
        hold: &BudgetHold,
        limit: i64,
        now_ms: i64,
    ) -> Result<BudgetReserve> {
        let mut windows = self.windows();
        let Some(window) = self.live(&mut windows, key) else {
            return Ok(BudgetReserve::Unseeded);
        };
        window.expire(now_ms);
        let total = window.total();
        if total.saturating_add(hold.amount) > limit {
            return Ok(BudgetReserve::Refused(total));
        }
        if let Some((amount, _)) = window
            .holds
            .insert(hold.id.clone(), (hold.amount, hold.expires_at_ms))
        {
            window.reserved -= amount;
        }
        window.reserved += hold.amount;
        window.next_expiry = window.next_expiry.min(hold.expires_at_ms);
        Ok(BudgetReserve::Held(window.total()))
    }

    async fn budget_release(&self, key: &CacheKey, id: &str, keep: i64, used: i64) -> Result<()> {
        let mut windows = self.windows();
        let Some(window) = self.live(&mut windows, key) else {
            return Ok(());
        };
        if let Some((amount, _)) = window.holds.get_mut(id) {
            window.reserved -= *amount;
            if keep > 0 {
                *amount = keep;
                window.reserved += keep;
            } else {
                window.holds.remove(id);
            }
        }
        window.used = window.used.saturating_add(used);
        Ok(())
    }

    async fn budget_total(&self, key: &CacheKey, now_ms: i64) -> Result<Option<i64>> {
        let mut windows = self.windows();
        Ok(self.live(&mut windows, key).map(|window| {
            window.expire(now_ms);
            window.total()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karen_domain::clock::{ManualClock, to_millis};

    fn hold(id: &str, amount: i64, expires_at_ms: i64) -> BudgetHold {
        BudgetHold {
            id: id.into(),
            amount,
            expires_at_ms,
        }
    }

    #[tokio::test]
    async fn budget_windows_hold_within_the_limit_and_release() {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH));
        let counters = MemoryCounters::new(clock.clone());
        let tenant = TenantId::generate();
        let key = CacheKey::tenant(tenant, "budget", "b:0");
        let now = to_millis(clock.now());
        let later = now + 60_000;
        assert_eq!(
            counters
                .budget_reserve(&key, &hold("a", 10, later), 100, now)
                .await
                .unwrap(),
            BudgetReserve::Unseeded
        );
        let seeded = [hold("old", 20, later)];
        assert!(
            counters
                .budget_seed(&key, 50, &seeded, Duration::from_secs(3600))
                .await
                .unwrap()
        );
        // A second seeder loses: the first one's total stands.
        assert!(
            !counters
                .budget_seed(&key, 0, &[], Duration::from_secs(3600))
                .await
                .unwrap()
        );
        assert_eq!(
            counters
                .budget_reserve(&key, &hold("a", 30, later), 100, now)
                .await
                .unwrap(),
            BudgetReserve::Held(100)
        );
        assert_eq!(
            counters
                .budget_reserve(&key, &hold("b", 1, later), 100, now)
                .await
                .unwrap(),
            BudgetReserve::Refused(100)
        );
        // Settling: the hold of 30 becomes a use of 12; shrinking keeps a part.
        counters.budget_release(&key, "a", 0, 12).await.unwrap();
        counters.budget_release(&key, "old", 5, 0).await.unwrap();
        assert_eq!(counters.budget_total(&key, now).await.unwrap(), Some(67));
        // Releasing a hold that is gone only adds the use.
        counters.budget_release(&key, "a", 0, 3).await.unwrap();
        assert_eq!(counters.budget_total(&key, now).await.unwrap(), Some(70));
        // Expired holds stop counting.
        assert_eq!(counters.budget_total(&key, later).await.unwrap(), Some(65));
        // The tenant's purge takes the window with it.
        assert_eq!(counters.tenant_key_count(tenant).await.unwrap(), 1);
        assert_eq!(counters.purge_tenant(tenant).await.unwrap(), 1);
        assert_eq!(counters.budget_total(&key, now).await.unwrap(), None);
    }
}
