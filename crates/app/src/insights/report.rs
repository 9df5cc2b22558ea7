//! The numbers of an insight report, read from the collector (process-wide)
//! and from usage records (per tenant).

use serde::Serialize;

use super::collector::{LlmOutcome, RejectionKind, SeriesKey, Totals};
use super::rules::Recommendation;

/// Rows of each process-wide list in a report (the slowest, the busiest).
pub const TOP_ROWS: usize = 10;

/// The providers that serve a model, in the order they are tried, and the
/// aliases that name it (from the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelChain {
    pub model: String,
    pub providers: Vec<String>,
    pub aliases: Vec<String>,
}

/// One route template and method.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteInsight {
    pub route: String,
    pub method: String,
    pub requests: u64,
    pub p50_seconds: f64,
    pub p95_seconds: f64,
    pub p99_seconds: f64,
    /// Responses by status class.
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
}

/// One provider and model (every attempt, fallbacks included).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderInsight {
    pub provider: String,
    pub model: String,
    pub calls: u64,
    pub p50_seconds: f64,
    pub p95_seconds: f64,
    /// Errors, timeouts, rate limits and open circuits (not requests the
    /// provider or Karen's policy refused as malformed).
    pub failures: u64,
    pub error_rate: f64,
    pub timeouts: u64,
    pub rate_limited: u64,
    pub circuit_open: u64,
}

/// One cache.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheInsight {
    pub cache: String,
    pub hits: u64,
    pub misses: u64,
    pub lookups: u64,
    pub hit_ratio: f64,
}

/// One kind of SQL statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryInsight {
    pub operation: String,
    pub queries: u64,
    pub p50_seconds: f64,
    pub p95_seconds: f64,
    pub p99_seconds: f64,
}

/// Requests refused by budgets or rate limits, per scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectionInsight {
    pub kind: RejectionKind,
    pub scope: String,
    pub rejected: u64,
    pub peak_per_minute: u64,
}

/// What this process saw (every tenant's traffic together).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessInsights {
    /// The slowest routes by p95.
    pub slowest_routes: Vec<RouteInsight>,
    /// Statement kinds by p95, slowest first.
    pub slow_queries: Vec<QueryInsight>,
    pub caches: Vec<CacheInsight>,
    pub providers: Vec<ProviderInsight>,
    pub rejections: Vec<RejectionInsight>,
}

/// One model in a tenant's usage records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelUsageInsight {
    pub provider: String,
    pub model: String,
    pub calls: i64,
    pub errors: i64,
    pub error_rate: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
    /// This model's share of the tenant's cost.
    pub cost_share: f64,
    pub mean_latency_seconds: f64,
}

/// One tenant's usage in the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantUsage {
    pub tenant_id: uuid::Uuid,
    pub slug: String,
    pub calls: i64,
    pub cost_micros: i64,
    /// Costliest first.
    pub models: Vec<ModelUsageInsight>,
}

/// A report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InsightReport {
    /// The minutes the numbers cover (ending now).
    pub window_minutes: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: time::OffsetDateTime,
    /// Process-wide numbers (operator view only; `null` in a tenant's view,
    /// or when metrics are off).
    pub process: Option<ProcessInsights>,
    /// Usage by tenant and model, costliest tenant first (a tenant's view has
    /// only its own).
    pub usage: Vec<TenantUsage>,
    pub recommendations: Vec<Recommendation>,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Sorts by `value` (largest first) and keeps [`TOP_ROWS`].
fn top<T>(mut rows: Vec<T>, value: impl Fn(&T) -> f64) -> Vec<T> {
    rows.sort_by(|a, b| value(b).total_cmp(&value(a)));
    rows.truncate(TOP_ROWS);
    rows
}

impl ProcessInsights {
    /// Every series' totals as rows (all of them: the rules judge every row;
    /// [`Self::shown`] keeps the top ones for the report).
    pub fn from_totals(totals: Vec<(SeriesKey, Totals)>) -> Self {
        let mut out = ProcessInsights::default();
        for (key, t) in totals {
            let q = |q: f64| t.quantile(q).unwrap_or(0.0);
            match key {
                SeriesKey::Route { route, method } => out.slowest_routes.push(RouteInsight {
                    route,
                    method,
                    requests: t.observations().max(t.slots.iter().take(4).sum()),
                    p50_seconds: q(0.5),
                    p95_seconds: q(0.95),
                    p99_seconds: q(0.99),
                    status_2xx: t.slots[0],
                    status_3xx: t.slots[1],
                    status_4xx: t.slots[2],
                    status_5xx: t.slots[3],
                }),
                SeriesKey::Llm { provider, model } => {
                    let calls: u64 = t.slots.iter().sum::<u64>().max(t.observations());
                    let failures = t.slots[LlmOutcome::Error as usize]
                        + t.slots[LlmOutcome::Timeout as usize]
                        + t.slots[LlmOutcome::RateLimited as usize]
                        + t.slots[LlmOutcome::CircuitOpen as usize];
                    out.providers.push(ProviderInsight {
                        provider,
                        model,
                        calls,
                        p50_seconds: q(0.5),
                        p95_seconds: q(0.95),
                        failures,
                        error_rate: ratio(failures, calls),
                        timeouts: t.slots[LlmOutcome::Timeout as usize],
                        rate_limited: t.slots[LlmOutcome::RateLimited as usize],
                        circuit_open: t.slots[LlmOutcome::CircuitOpen as usize],
                    });
                }
                SeriesKey::Cache { cache } => {
                    let (hits, misses) = (t.slots[0], t.slots[1]);
                    out.caches.push(CacheInsight {
                        cache,
                        hits,
                        misses,
                        lookups: hits + misses,
                        hit_ratio: ratio(hits, hits + misses),
                    });
                }
                SeriesKey::Query { operation } => out.slow_queries.push(QueryInsight {
                    operation,
                    queries: t.observations(),
                    p50_seconds: q(0.5),
                    p95_seconds: q(0.95),
                    p99_seconds: q(0.99),
                }),
                SeriesKey::Rejection { kind, scope } => out.rejections.push(RejectionInsight {
                    kind,
                    scope,
                    rejected: t.slots[0],
                    peak_per_minute: t.peak_slots[0],
                }),
            }
        }
        out
    }

    /// The report's view: the top rows of each list.
    pub fn shown(self) -> Self {
        Self {
            slowest_routes: top(self.slowest_routes, |r| r.p95_seconds),
            slow_queries: top(self.slow_queries, |q| q.p95_seconds),
            caches: top(self.caches, |c| c.lookups as f64),
            providers: top(self.providers, |p| p.calls as f64),
            rejections: top(self.rejections, |r| r.rejected as f64),
        }
    }
}
