//! Insights: the slowest routes, slow queries, cache hit ratios, provider
//! latency and errors and rejected requests over a recent window, from the
//! process's own metrics; spending per tenant and model from usage records;
//! and plain recommendations derived from both, each naming its numbers.
//!
//! Two views. The platform operator's has everything. A tenant's has only
//! numbers computed from its own usage records: process-wide numbers mix
//! every tenant's traffic (a route's request count or a provider's error
//! spike can reveal another tenant's activity), so they are never shown to a
//! tenant.

mod collector;
mod recorder;
mod report;
mod rules;
#[cfg(test)]
mod rules_tests;
mod service;

pub use collector::{
    DEFAULT_WINDOW_MINUTES, InsightCollector, LATENCY_BUCKETS, LlmOutcome, MAX_SERIES,
    MAX_WINDOW_MINUTES, Probe, RejectionKind, SeriesKey, Totals, status_slot,
};
pub use recorder::{InsightRecorder, families};
pub use report::{
    CacheInsight, InsightReport, ModelChain, ModelUsageInsight, ProcessInsights, ProviderInsight,
    QueryInsight, RejectionInsight, RouteInsight, TOP_ROWS, TenantUsage,
};
pub use rules::*;
pub use service::{InsightPorts, InsightService, parse_window};
