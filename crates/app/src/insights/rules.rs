//! Recommendations derived from the numbers of a report. Each rule has its
//! thresholds as named constants, stays silent below a minimum number of
//! samples, and names the numbers it came from (in its message and, for
//! machines, in `evidence`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::collector::RejectionKind;
use super::report::{
    CacheInsight, ModelChain, ProviderInsight, QueryInsight, RejectionInsight, RouteInsight,
    TenantUsage,
};
use crate::assistant::ModelPrice;

/// The latency SLO of a route: p95 at most this (the alert rules use the same 1 s).
pub const ROUTE_P95_SLO_SECS: f64 = 1.0;
/// Requests a route needs in the window before its p95 is judged.
pub const MIN_ROUTE_REQUESTS: u64 = 20;
/// A statement kind whose p95 is above this is a slow query.
pub const SLOW_QUERY_P95_SECS: f64 = 0.1;
/// Statements an operation needs before it is judged.
pub const MIN_QUERIES: u64 = 50;
/// Share of failed calls above which a provider is called unreliable.
pub const PROVIDER_ERROR_RATE: f64 = 0.05;
/// Calls a provider and model need before their latency or errors are judged.
pub const MIN_PROVIDER_CALLS: u64 = 20;
/// A fallback whose p95 is at least this many times lower than the primary's
/// should come first.
pub const FALLBACK_SPEEDUP: f64 = 2.0;
/// Hit ratio below which a cache is called too small.
pub const CACHE_HIT_RATIO_FLOOR: f64 = 0.5;
/// Lookups a cache needs before its hit ratio is judged.
pub const MIN_CACHE_LOOKUPS: u64 = 500;
/// Rejections of one kind and scope in the window that deserve a look.
pub const MIN_REJECTIONS: u64 = 20;
/// Share of a tenant's cost on one model that makes it the one to look at.
pub const DOMINANT_COST_SHARE: f64 = 0.5;
/// How many times cheaper another model must be for the same tokens.
pub const CHEAPER_FACTOR: f64 = 3.0;
/// Calls a tenant needs in the window before its spending is judged.
pub const MIN_USAGE_CALLS: i64 = 20;

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// The rule, a stable code: `route_slo`, `slow_query`, `provider_errors`,
    /// `provider_order`, `cache_size`, `rejections`, `model_cost`.
    pub rule: &'static str,
    /// What it is about (a route, a provider and model, a cache, a tenant…).
    pub subject: String,
    /// What to change, with the numbers it came from.
    pub message: String,
    /// The numbers, by name.
    pub evidence: BTreeMap<&'static str, f64>,
}

/// `1.8 s` or `850 ms`.
pub(crate) fn duration(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{:.0} ms", seconds * 1000.0)
    }
}

/// `12%`.
fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// `5,000`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Routes whose p95 is above the SLO.
pub fn route_slo(routes: &[RouteInsight]) -> Vec<Recommendation> {
    routes
        .iter()
        .filter(|r| r.requests >= MIN_ROUTE_REQUESTS && r.p95_seconds > ROUTE_P95_SLO_SECS)
        .map(|r| Recommendation {
            rule: "route_slo",
            subject: format!("{} {}", r.method, r.route),
            message: format!(
                "{} {} p95 {} over {} requests is above the {} SLO: look at its slow queries and model calls, or add replicas",
                r.method,
                r.route,
                duration(r.p95_seconds),
                count(r.requests),
                duration(ROUTE_P95_SLO_SECS)
            ),
            evidence: BTreeMap::from([
                ("p95_seconds", r.p95_seconds),
                ("requests", r.requests as f64),
                ("slo_seconds", ROUTE_P95_SLO_SECS),
            ]),
        })
        .collect()
}

/// Statement kinds whose p95 is above [`SLOW_QUERY_P95_SECS`].
pub fn slow_queries(queries: &[QueryInsight]) -> Vec<Recommendation> {
    queries
        .iter()
        .filter(|q| q.queries >= MIN_QUERIES && q.p95_seconds > SLOW_QUERY_P95_SECS)
        .map(|q| Recommendation {
            rule: "slow_query",
            subject: q.operation.clone(),
            message: format!(
                "{} statements p95 {} over {} statements (threshold {}): check indexes and the database pool (karen_db_pool_acquire_seconds)",
                q.operation,
                duration(q.p95_seconds),
                count(q.queries),
                duration(SLOW_QUERY_P95_SECS)
            ),
            evidence: BTreeMap::from([
                ("p95_seconds", q.p95_seconds),
                ("queries", q.queries as f64),
                ("threshold_seconds", SLOW_QUERY_P95_SECS),
            ]),
        })
        .collect()
}

/// Providers that fail more than [`PROVIDER_ERROR_RATE`] of their calls.
pub fn provider_errors(providers: &[ProviderInsight]) -> Vec<Recommendation> {
    providers
        .iter()
        .filter(|p| p.calls >= MIN_PROVIDER_CALLS && p.error_rate > PROVIDER_ERROR_RATE)
        .map(|p| Recommendation {
            rule: "provider_errors",
            subject: format!("{}/{}", p.provider, p.model),
            message: format!(
                "provider {} failed {} of {} calls for model {} ({} failures, threshold {}): check its status and credentials, or put a fallback first",
                p.provider,
                percent(p.error_rate),
                count(p.calls),
                p.model,
                count(p.failures),
                percent(PROVIDER_ERROR_RATE)
            ),
            evidence: BTreeMap::from([
                ("error_rate", p.error_rate),
                ("calls", p.calls as f64),
                ("failures", p.failures as f64),
                ("threshold", PROVIDER_ERROR_RATE),
            ]),
        })
        .collect()
}

/// A model's first provider much slower than one of its fallbacks.
pub fn provider_order(providers: &[ProviderInsight], chains: &[ModelChain]) -> Vec<Recommendation> {
    let judged = |provider: &str, model: &str| {
        providers
            .iter()
            .find(|p| p.provider == provider && p.model == model && p.calls >= MIN_PROVIDER_CALLS)
    };
    let mut out = Vec::new();
    for chain in chains {
        let Some((first, rest)) = chain.providers.split_first() else {
            continue;
        };
        let Some(primary) = judged(first, &chain.model) else {
            continue;
        };
        let fastest = rest
            .iter()
            .filter_map(|name| judged(name, &chain.model))
            .filter(|f| f.p95_seconds * FALLBACK_SPEEDUP <= primary.p95_seconds)
            .min_by(|a, b| a.p95_seconds.total_cmp(&b.p95_seconds));
        let Some(fallback) = fastest else {
            continue;
        };
        let aliases = if chain.aliases.is_empty() {
            String::new()
        } else {
            format!(
                " (and the aliases {} that name it)",
                chain.aliases.join(", ")
            )
        };
        out.push(Recommendation {
            rule: "provider_order",
            subject: chain.model.clone(),
            message: format!(
                "provider {} p95 {} over {} calls vs fallback {} p95 {} over {} calls for model {}: list {} before {} in [[llm.providers]] so model {}{} goes there first",
                primary.provider,
                duration(primary.p95_seconds),
                count(primary.calls),
                fallback.provider,
                duration(fallback.p95_seconds),
                count(fallback.calls),
                chain.model,
                fallback.provider,
                primary.provider,
                chain.model,
                aliases
            ),
            evidence: BTreeMap::from([
                ("primary_p95_seconds", primary.p95_seconds),
                ("primary_calls", primary.calls as f64),
                ("fallback_p95_seconds", fallback.p95_seconds),
                ("fallback_calls", fallback.calls as f64),
            ]),
        });
    }
    out
}

/// Caches that miss too often.
pub fn cache_size(caches: &[CacheInsight]) -> Vec<Recommendation> {
    caches
        .iter()
        .filter(|c| c.lookups >= MIN_CACHE_LOOKUPS && c.hit_ratio < CACHE_HIT_RATIO_FLOOR)
        .map(|c| Recommendation {
            rule: "cache_size",
            subject: c.cache.clone(),
            message: format!(
                "cache hit ratio {} for {} over {} lookups (floor {}): raise its size or lifetime",
                percent(c.hit_ratio),
                c.cache,
                count(c.lookups),
                percent(CACHE_HIT_RATIO_FLOOR)
            ),
            evidence: BTreeMap::from([
                ("hit_ratio", c.hit_ratio),
                ("lookups", c.lookups as f64),
                ("hits", c.hits as f64),
                ("floor", CACHE_HIT_RATIO_FLOOR),
            ]),
        })
        .collect()
}

/// Many requests refused by budgets or rate limits.
pub fn rejections(rejected: &[RejectionInsight], window_minutes: u32) -> Vec<Recommendation> {
    rejected
        .iter()
        .filter(|r| r.rejected >= MIN_REJECTIONS)
        .map(|r| {
            let (what, advice) = match r.kind {
                RejectionKind::RateLimit => (
                    "rate-limit",
                    "a client may be retrying in a loop, or the limit is too low for real traffic",
                ),
                RejectionKind::Budget => (
                    "budget",
                    "budgets are exhausted: raise them or tell the tenants before their users notice",
                ),
            };
            Recommendation {
                rule: "rejections",
                subject: format!("{what}/{}", r.scope),
                message: format!(
                    "{} {what} rejections for scope {} in the last {} min (peak {} in one minute): {advice}",
                    count(r.rejected),
                    r.scope,
                    window_minutes,
                    count(r.peak_per_minute)
                ),
                evidence: BTreeMap::from([
                    ("rejected", r.rejected as f64),
                    ("peak_per_minute", r.peak_per_minute as f64),
                    ("window_minutes", f64::from(window_minutes)),
                ]),
            }
        })
        .collect()
}

/// What `tokens` of `prompt` and `completion` cost at `price`, in micros.
fn priced(price: &ModelPrice, prompt: i64, completion: i64) -> f64 {
    (prompt as f64 * price.prompt_micros_per_1k as f64
        + completion as f64 * price.completion_micros_per_1k as f64)
        / 1000.0
}

/// A tenant spending most of its cost on a model when another costs far less
/// for the same tokens. `candidates` are the models the platform serves
/// (empty: every priced model).
pub fn model_cost(
    tenant: &TenantUsage,
    prices: &[ModelPrice],
    candidates: &[String],
) -> Option<Recommendation> {
    if tenant.calls < MIN_USAGE_CALLS || tenant.cost_micros <= 0 {
        return None;
    }
    let top = tenant
        .models
        .iter()
        .max_by_key(|m| m.cost_micros)
        .filter(|m| m.cost_share >= DOMINANT_COST_SHARE)?;
    let current = prices.iter().find(|p| p.model == top.model)?;
    let now = priced(current, top.prompt_tokens, top.completion_tokens);
    if now <= 0.0 {
        return None;
    }
    let (cheaper, then) = prices
        .iter()
        .filter(|p| p.model != top.model)
        .filter(|p| candidates.is_empty() || candidates.contains(&p.model))
        .map(|p| (p, priced(p, top.prompt_tokens, top.completion_tokens)))
        // An unpriced model is not cheaper, it is unknown.
        .filter(|(_, cost)| *cost > 0.0)
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    let factor = now / then;
    if factor < CHEAPER_FACTOR {
        return None;
    }
    Some(Recommendation {
        rule: "model_cost",
        subject: tenant.slug.clone(),
        message: format!(
            "tenant {} spends {} of its cost on model {} ({} calls, {} prompt and {} completion tokens); model {} costs {:.1}× less for the same tokens: try it where it serves the use as well (e.g. point an alias at it)",
            tenant.slug,
            percent(top.cost_share),
            top.model,
            count(top.calls as u64),
            count(top.prompt_tokens as u64),
            count(top.completion_tokens as u64),
            cheaper.model,
            factor
        ),
        evidence: BTreeMap::from([
            ("cost_share", top.cost_share),
            ("model_cost_micros", top.cost_micros as f64),
            ("tenant_cost_micros", tenant.cost_micros as f64),
            ("calls", top.calls as f64),
            ("cheaper_cost_micros", then),
            ("cheaper_factor", factor),
        ]),
    })
}
