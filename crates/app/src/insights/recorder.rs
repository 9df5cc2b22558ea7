//! A `metrics` recorder in front of another (the Prometheus one) that
//! forwards everything and also feeds the [`InsightCollector`] for the
//! families it reads, so insights need no call sites of their own.
//!
//! `metrics_util::layers::Fanout` would do the forwarding too, but it builds
//! a `Vec` and an `Arc` on every event (the macros register on each call);
//! this recorder builds each combined handle once per label set and reuses it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

use super::collector::{
    InsightCollector, LlmOutcome, Probe, RejectionKind, SeriesKey, status_slot,
};

/// The metric families the collector reads (see `deploy/metrics.txt`).
pub mod families {
    pub const HTTP_DURATION: &str = "karen_http_request_duration_seconds";
    pub const HTTP_REQUESTS: &str = "karen_http_requests_total";
    pub const LLM_DURATION: &str = "karen_llm_request_duration_seconds";
    pub const LLM_REQUESTS: &str = "karen_llm_requests_total";
    pub const CACHE_REQUESTS: &str = "karen_cache_requests_total";
    pub const QUERY_DURATION: &str = "karen_db_query_duration_seconds";
    pub const BUDGET_REJECTIONS: &str = "karen_budget_rejections_total";
    pub const RATE_LIMIT_REJECTIONS: &str = "karen_rate_limit_rejections_total";
}

fn label<'a>(key: &'a Key, name: &str) -> &'a str {
    key.labels()
        .find(|l| l.key() == name)
        .map_or("", |l| l.value())
}

/// The series and slot a counter of `key` counts in, if the collector reads it.
fn counter_target(key: &Key) -> Option<(SeriesKey, usize)> {
    let target = match key.name() {
        families::HTTP_REQUESTS => (
            SeriesKey::Route {
                route: label(key, "route").to_owned(),
                method: label(key, "method").to_owned(),
            },
            status_slot(label(key, "status").parse().unwrap_or(500)),
        ),
        families::LLM_REQUESTS => (
            SeriesKey::Llm {
                provider: label(key, "provider").to_owned(),
                model: label(key, "model").to_owned(),
            },
            LlmOutcome::parse(label(key, "outcome")) as usize,
        ),
        families::CACHE_REQUESTS => (
            SeriesKey::Cache {
                cache: label(key, "cache").to_owned(),
            },
            usize::from(label(key, "result") != "hit"),
        ),
        families::BUDGET_REJECTIONS => (
            SeriesKey::Rejection {
                kind: RejectionKind::Budget,
                scope: label(key, "scope").to_owned(),
            },
            0,
        ),
        families::RATE_LIMIT_REJECTIONS => (
            SeriesKey::Rejection {
                kind: RejectionKind::RateLimit,
                scope: label(key, "scope").to_owned(),
            },
            0,
        ),
        _ => return None,
    };
    Some(target)
}

/// The series a histogram of `key` observes into, if the collector reads it.
fn histogram_target(key: &Key) -> Option<SeriesKey> {
    match key.name() {
        families::HTTP_DURATION => Some(SeriesKey::Route {
            route: label(key, "route").to_owned(),
            method: label(key, "method").to_owned(),
        }),
        families::LLM_DURATION => Some(SeriesKey::Llm {
            provider: label(key, "provider").to_owned(),
            model: label(key, "model").to_owned(),
        }),
        families::QUERY_DURATION => Some(SeriesKey::Query {
            operation: label(key, "operation").to_owned(),
        }),
        _ => None,
    }
}

/// A counter that counts in both places.
struct TeeCounter {
    inner: Counter,
    probe: Probe,
}

impl CounterFn for TeeCounter {
    fn increment(&self, value: u64) {
        self.inner.increment(value);
        self.probe.count(value);
    }

    fn absolute(&self, value: u64) {
        // Only used to create series at 0: nothing happened in the window.
        self.inner.absolute(value);
    }
}

/// A histogram that records in both places.
struct TeeHistogram {
    inner: Histogram,
    probe: Probe,
}

impl HistogramFn for TeeHistogram {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.probe.observe(value);
    }
}

/// The recorder: `inner` for everything, the collector for what it reads.
pub struct InsightRecorder<R> {
    inner: R,
    collector: Arc<InsightCollector>,
    counters: RwLock<HashMap<Key, Counter>>,
    histograms: RwLock<HashMap<Key, Histogram>>,
}

impl<R> InsightRecorder<R> {
    /// Wraps `inner`, feeding `collector`.
    pub fn new(inner: R, collector: Arc<InsightCollector>) -> Self {
        Self {
            inner,
            collector,
            counters: RwLock::new(HashMap::new()),
            histograms: RwLock::new(HashMap::new()),
        }
    }
}

/// The cached handle of `key`, or a new one made by `make` (cached if `Some`).
fn cached<H: Clone>(
    cache: &RwLock<HashMap<Key, H>>,
    key: &Key,
    make: impl FnOnce() -> Option<H>,
) -> Option<H> {
    if let Some(handle) = cache
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
    {
        return Some(handle.clone());
    }
    let handle = make()?;
    let mut all = cache.write().unwrap_or_else(PoisonError::into_inner);
    Some(all.entry(key.clone()).or_insert(handle).clone())
}

impl<R: Recorder> Recorder for InsightRecorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let Some((series, slot)) = counter_target(key) else {
            return self.inner.register_counter(key, metadata);
        };
        cached(&self.counters, key, || {
            let probe = self.collector.probe(series, slot)?;
            let inner = self.inner.register_counter(key, metadata);
            Some(Counter::from_arc(Arc::new(TeeCounter { inner, probe })))
        })
        .unwrap_or_else(|| self.inner.register_counter(key, metadata))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let Some(series) = histogram_target(key) else {
            return self.inner.register_histogram(key, metadata);
        };
        cached(&self.histograms, key, || {
            let probe = self.collector.probe(series, 0)?;
            let inner = self.inner.register_histogram(key, metadata);
            Some(Histogram::from_arc(Arc::new(TeeHistogram { inner, probe })))
        })
        .unwrap_or_else(|| self.inner.register_histogram(key, metadata))
    }
}

#[cfg(test)]
mod tests {
    use karen_domain::clock::SystemClock;
    use metrics::with_local_recorder;

    use super::*;

    #[test]
    fn known_families_reach_the_collector_and_everything_reaches_the_inner_recorder() {
        let collector = Arc::new(InsightCollector::new(60, Arc::new(SystemClock)));
        let inner = metrics_noop();
        let recorder = InsightRecorder::new(inner, collector.clone());
        with_local_recorder(&recorder, || {
            for status in ["200", "200", "503"] {
                metrics::counter!(families::HTTP_REQUESTS, "route" => "/v1/x", "method" => "GET", "status" => status)
                    .increment(1);
            }
            metrics::histogram!(families::HTTP_DURATION, "route" => "/v1/x", "method" => "GET")
                .record(0.2);
            metrics::counter!(families::CACHE_REQUESTS, "cache" => "access", "result" => "miss")
                .increment(3);
            metrics::counter!(families::RATE_LIMIT_REJECTIONS, "scope" => "tenant").absolute(0);
            metrics::counter!("karen_other_total").increment(1);
        });
        let totals = collector.totals(60);
        let route = totals
            .iter()
            .find(|(k, _)| matches!(k, SeriesKey::Route { .. }))
            .unwrap()
            .1;
        assert_eq!(
            (route.slots[0], route.slots[3], route.observations()),
            (2, 1, 1)
        );
        let cache = totals
            .iter()
            .find(|(k, _)| matches!(k, SeriesKey::Cache { .. }))
            .unwrap()
            .1;
        assert_eq!(cache.slots[1], 3);
        // A series created at zero is not an event.
        assert_eq!(totals.len(), 2);
    }

    /// A recorder that drops everything (the Prometheus one in production).
    fn metrics_noop() -> metrics::NoopRecorder {
        metrics::NoopRecorder
    }
}
