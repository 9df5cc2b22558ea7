//! The windowed insight collector: per-minute buckets of latency histograms
//! and counts, kept for a configured window, from which the report reads
//! percentiles, ratios and rates over any shorter window.
//!
//! Each series is a ring of one bucket per minute behind its own mutex; a
//! bucket is reused in place when its minute comes round again, so recording
//! never allocates. Series are created on first use (bounded by
//! [`MAX_SERIES`]), which the metrics recorder does once per label set.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use karen_domain::clock::Clock;

/// Bucket bounds of every latency histogram, in seconds (the Prometheus
/// exporter uses the same bounds; 1 s is the route SLO).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Buckets of a histogram: one per bound, and one above the last.
const BUCKETS: usize = 18;

/// Counts a series keeps per minute besides its histogram (status classes,
/// outcomes, hits and misses).
pub const SLOTS: usize = 6;

/// The window kept when none is configured.
pub const DEFAULT_WINDOW_MINUTES: u32 = 60;

/// The longest window that may be configured (a day).
pub const MAX_WINDOW_MINUTES: u32 = 1440;

/// Series beyond this many are not recorded (the labels are bounded by
/// configuration and route templates; this only guards against a mistake).
pub const MAX_SERIES: usize = 4096;

/// What a series describes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SeriesKey {
    /// HTTP requests by route template and method; slots are status classes.
    Route { route: String, method: String },
    /// Model calls by provider and model; slots are [`LlmOutcome`]s.
    Llm { provider: String, model: String },
    /// Lookups of one cache; slot 0 hits, slot 1 misses.
    Cache { cache: String },
    /// SQL statements by operation.
    Query { operation: String },
    /// Requests refused by a budget or a rate limit, by scope; slot 0.
    Rejection { kind: RejectionKind, scope: String },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    Budget,
    RateLimit,
}

/// The `outcome` label of a model call, as slot indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmOutcome {
    Ok = 0,
    Error = 1,
    Timeout = 2,
    RateLimited = 3,
    CircuitOpen = 4,
    /// Refused as malformed or by policy: not the provider's failure.
    Rejected = 5,
}

impl LlmOutcome {
    /// The outcome of a label value (unknown values count as errors).
    pub fn parse(label: &str) -> Self {
        match label {
            "ok" => Self::Ok,
            "timeout" => Self::Timeout,
            "rate_limited" => Self::RateLimited,
            "circuit_open" => Self::CircuitOpen,
            "rejected" => Self::Rejected,
            _ => Self::Error,
        }
    }
}

/// The slot of an HTTP status: 0 for 1xx/2xx, 1 for 3xx, 2 for 4xx, 3 for 5xx.
pub fn status_slot(status: u16) -> usize {
    match status {
        0..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        _ => 3,
    }
}

#[derive(Debug, Clone, Copy)]
struct Minute {
    /// The minute (since the Unix epoch) the counts belong to; `None` if unused.
    minute: Option<u64>,
    counts: [u64; BUCKETS],
    sum: f64,
    slots: [u64; SLOTS],
}

impl Minute {
    const EMPTY: Minute = Minute {
        minute: None,
        counts: [0; BUCKETS],
        sum: 0.0,
        slots: [0; SLOTS],
    };
}

/// Sums of a series over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    /// Histogram bucket counts (not cumulative).
    pub counts: [u64; BUCKETS],
    /// Sum of the observed values.
    pub sum: f64,
    pub slots: [u64; SLOTS],
    /// The most slot events in one minute, per slot (spikes).
    pub peak_slots: [u64; SLOTS],
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            sum: 0.0,
            slots: [0; SLOTS],
            peak_slots: [0; SLOTS],
        }
    }
}

impl Totals {
    /// Observations in the histogram.
    pub fn observations(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0–1) of the histogram, interpolated linearly inside
    /// its bucket as Prometheus's `histogram_quantile` does; `None` without
    /// observations. Above the last bound it answers the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.counts, q)
    }

    /// Mean of the observed values.
    pub fn mean(&self) -> Option<f64> {
        let n = self.observations();
        (n > 0).then(|| self.sum / n as f64)
    }
}

/// See [`Totals::quantile`].
pub fn quantile(counts: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (index, &count) in counts.iter().enumerate() {
        let through = below + count;
        if count > 0 && through as f64 >= rank {
            let Some(&upper) = LATENCY_BUCKETS.get(index) else {
                return LATENCY_BUCKETS.last().copied();
            };
            let lower = index
                .checked_sub(1)
                .and_then(|i| LATENCY_BUCKETS.get(i))
                .copied()
                .unwrap_or(0.0);
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below = through;
    }
    LATENCY_BUCKETS.last().copied()
}

/// One series: a ring of per-minute buckets.
#[derive(Debug)]
pub struct Series {
    ring: Mutex<Box<[Minute]>>,
}

impl Series {
    fn new(minutes: u32) -> Self {
        let len = usize::try_from(minutes.max(1)).unwrap_or(1);
        Self {
            ring: Mutex::new(vec![Minute::EMPTY; len].into_boxed_slice()),
        }
    }

    fn with_minute(&self, minute: u64, change: impl FnOnce(&mut Minute)) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let len = ring.len() as u64;
        let index = usize::try_from(minute % len).unwrap_or(0);
        if let Some(bucket) = ring.get_mut(index) {
            // A late event of a minute whose slot a newer minute has taken
            // (the wall clock stepped back) is dropped, not allowed to wipe it.
            if bucket.minute.is_some_and(|newer| newer > minute) {
                return;
            }
            if bucket.minute != Some(minute) {
                *bucket = Minute {
                    minute: Some(minute),
                    ..Minute::EMPTY
                };
            }
            change(bucket);
        }
    }

    /// Adds one observation (seconds) at `minute`.
    pub fn observe(&self, minute: u64, seconds: f64) {
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS - 1);
        self.with_minute(minute, |m| {
            m.counts[bucket] += 1;
            m.sum += seconds;
        });
    }

    /// Adds `n` to `slot` at `minute`.
    pub fn count(&self, minute: u64, slot: usize, n: u64) {
        if slot < SLOTS {
            self.with_minute(minute, |m| m.slots[slot] += n);
        }
    }

    /// Sums of the minutes after `after` up to and including `through`.
    fn totals(&self, after: u64, through: u64) -> Totals {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let mut totals = Totals::default();
        for bucket in ring.iter() {
            let Some(minute) = bucket.minute else {
                continue;
            };
            if minute <= after || minute > through {
                continue;
            }
            for (sum, count) in totals.counts.iter_mut().zip(bucket.counts) {
                *sum += count;
            }
            totals.sum += bucket.sum;
            for slot in 0..SLOTS {
                totals.slots[slot] += bucket.slots[slot];
                totals.peak_slots[slot] = totals.peak_slots[slot].max(bucket.slots[slot]);
            }
        }
        totals
    }
}

/// Where a metrics handle records: one series, the slot its events count in
/// (for counters), and the collector's clock.
#[derive(Clone)]
pub struct Probe {
    series: Arc<Series>,
    slot: usize,
    clock: Arc<dyn Clock>,
}

impl Probe {
    fn minute(&self) -> u64 {
        minute_of(self.clock.as_ref())
    }

    /// Records one latency observation.
    pub fn observe(&self, seconds: f64) {
        self.series.observe(self.minute(), seconds);
    }

    /// Counts `n` events in the probe's slot.
    pub fn count(&self, n: u64) {
        self.series.count(self.minute(), self.slot, n);
    }
}

fn minute_of(clock: &dyn Clock) -> u64 {
    u64::try_from(clock.now().unix_timestamp().div_euclid(60)).unwrap_or(0)
}

/// The collector: every series, over a window of `window_minutes`.
pub struct InsightCollector {
    clock: Arc<dyn Clock>,
    window_minutes: u32,
    series: RwLock<BTreeMap<SeriesKey, Arc<Series>>>,
}

impl std::fmt::Debug for InsightCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsightCollector")
            .field("window_minutes", &self.window_minutes)
            .finish_non_exhaustive()
    }
}

impl InsightCollector {
    /// A collector keeping `window_minutes` (1 to [`MAX_WINDOW_MINUTES`]).
    pub fn new(window_minutes: u32, clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            window_minutes: window_minutes.clamp(1, MAX_WINDOW_MINUTES),
            series: RwLock::new(BTreeMap::new()),
        }
    }

    /// The window the collector keeps, in minutes.
    pub fn window_minutes(&self) -> u32 {
        self.window_minutes
    }

    /// The series of `key`, created if new (`None` past [`MAX_SERIES`]).
    fn series(&self, key: SeriesKey) -> Option<Arc<Series>> {
        if let Some(series) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Some(series.clone());
        }
        let mut all = self.series.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = all.get(&key) {
            return Some(series.clone());
        }
        if all.len() >= MAX_SERIES {
            return None;
        }
        let series = Arc::new(Series::new(self.window_minutes));
        all.insert(key, series.clone());
        Some(series)
    }

    /// A probe recording into `key`'s series, counting in `slot`.
    pub fn probe(&self, key: SeriesKey, slot: usize) -> Option<Probe> {
        Some(Probe {
            series: self.series(key)?,
            slot,
            clock: self.clock.clone(),
        })
    }

    /// Records one observation now (the recorder goes through [`Probe`]s).
    pub fn observe(&self, key: SeriesKey, seconds: f64) {
        if let Some(probe) = self.probe(key, 0) {
            probe.observe(seconds);
        }
    }

    /// Counts `n` events in `slot` now.
    pub fn count(&self, key: SeriesKey, slot: usize, n: u64) {
        if let Some(probe) = self.probe(key, slot) {
            probe.count(n);
        }
    }

    /// Every series' sums over the last `minutes` (the current minute
    /// included; at most the collector's window), skipping empty ones.
    pub fn totals(&self, minutes: u32) -> Vec<(SeriesKey, Totals)> {
        let through = minute_of(self.clock.as_ref());
        let after = through.saturating_sub(u64::from(minutes.clamp(1, self.window_minutes)));
        let all: Vec<(SeriesKey, Arc<Series>)> = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        all.into_iter()
            .map(|(key, series)| (key, series.totals(after, through)))
            .filter(|(_, t)| t.observations() > 0 || t.slots.iter().any(|s| *s > 0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use karen_domain::clock::ManualClock;
    use time::macros::datetime;

    use super::*;

    fn route() -> SeriesKey {
        SeriesKey::Route {
            route: "/v1/x".into(),
            method: "GET".into(),
        }
    }

    fn setup(window: u32) -> (Arc<ManualClock>, InsightCollector) {
        let clock = Arc::new(ManualClock::new(datetime!(2026-12-01 10:00:00 UTC)));
        let collector = InsightCollector::new(window, clock.clone());
        (clock, collector)
    }

    #[test]
    fn percentiles_interpolate_inside_the_bucket() {
        let (_, collector) = setup(60);
        // 100 observations: 50 in (0.05, 0.1], 40 in (0.25, 0.5], 10 in (1, 2.5].
        for _ in 0..50 {
            collector.observe(route(), 0.08);
        }
        for _ in 0..40 {
            collector.observe(route(), 0.3);
        }
        for _ in 0..10 {
            collector.observe(route(), 2.0);
        }
        let totals = &collector.totals(60)[0].1;
        assert_eq!(totals.observations(), 100);
        // p50: rank 50 is the last of the first 50: the top of (0.05, 0.1].
        assert!((totals.quantile(0.5).unwrap() - 0.1).abs() < 1e-9);
        // p95: rank 95 is the 5th of 10 in (1, 2.5]: 1 + 1.5 * 0.5.
        assert!((totals.quantile(0.95).unwrap() - 1.75).abs() < 1e-9);
        // p99: the 9th of 10: 1 + 1.5 * 0.9.
        assert!((totals.quantile(0.99).unwrap() - 2.35).abs() < 1e-9);
        assert!(
            (totals.mean().unwrap() - (50.0 * 0.08 + 40.0 * 0.3 + 10.0 * 2.0) / 100.0).abs() < 1e-9
        );
    }

    #[test]
    fn a_quantile_above_the_last_bound_is_the_last_bound_and_none_without_data() {
        let (_, collector) = setup(60);
        assert_eq!(Totals::default().quantile(0.5), None);
        collector.observe(route(), 500.0);
        assert_eq!(collector.totals(60)[0].1.quantile(0.99), Some(120.0));
        // The first bucket interpolates from 0.
        let mut counts = [0u64; BUCKETS];
        counts[0] = 2;
        assert!((quantile(&counts, 0.5).unwrap() - 0.00025).abs() < 1e-12);
    }

    #[test]
    fn minutes_leave_the_window_as_the_clock_moves() {
        let (clock, collector) = setup(10);
        collector.count(route(), status_slot(200), 5);
        clock.advance(Duration::from_secs(5 * 60));
        collector.count(route(), status_slot(503), 2);
        collector.observe(route(), 0.2);
        // Both minutes are within the last 10, only the second within the last 3.
        let all = collector.totals(10)[0].1;
        assert_eq!((all.slots[0], all.slots[3]), (5, 2));
        assert_eq!(all.peak_slots[0], 5);
        let recent = collector.totals(3)[0].1;
        assert_eq!((recent.slots[0], recent.slots[3]), (0, 2));
        // A window longer than the collector's is cut to it.
        clock.advance(Duration::from_secs(6 * 60));
        let left = collector.totals(600)[0].1;
        assert_eq!(
            (left.slots[0], left.slots[3], left.observations()),
            (0, 2, 1)
        );
        // Twenty minutes after the last event nothing is left, and the empty series is skipped.
        clock.advance(Duration::from_secs(14 * 60));
        assert!(collector.totals(10).is_empty());
        // This minute reuses the ring slot of the 503s: their counts do not come back.
        collector.count(route(), 0, 1);
        let reused = collector.totals(10)[0].1;
        assert_eq!(
            (reused.slots, reused.observations()),
            ([1, 0, 0, 0, 0, 0], 0)
        );
        // An event stamped with a minute older than its slot's is dropped.
        let series = collector.series(route()).unwrap();
        let now = minute_of(clock.as_ref());
        series.count(now - 10, 0, 7);
        assert_eq!(collector.totals(10)[0].1.slots[0], 1);
    }

    #[test]
    fn status_classes_and_outcomes_map_to_slots() {
        assert_eq!(
            [100, 204, 301, 404, 429, 500, 599].map(status_slot),
            [0, 0, 1, 2, 2, 3, 3]
        );
        assert_eq!(LlmOutcome::parse("ok") as usize, 0);
        assert_eq!(LlmOutcome::parse("something-new"), LlmOutcome::Error);
        assert_eq!(LlmOutcome::parse("rejected") as usize, 5);
        assert_eq!(LATENCY_BUCKETS.len() + 1, BUCKETS);
    }
}
