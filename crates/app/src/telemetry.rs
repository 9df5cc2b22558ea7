//! Metrics the services record, through the `metrics` facade (the binary
//! installs the Prometheus recorder). Names and labels follow the contract in
//! `deploy/metrics.txt`, which the alert rules and dashboards are checked
//! against.
//!
//! Per-tenant series are bounded: only the top N tenants by requests get a
//! series of their own, everyone else is summed under `tenant="other"`. They
//! are kept here, not in the recorder, so that a tenant can leave the top N
//! without its series lingering: [`TenantSeries::render`] writes them at
//! scrape time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use karen_domain::TenantId;
use karen_domain::budget::BudgetScope;

/// Metric names (see `deploy/metrics.txt`).
pub mod names {
    pub const LLM_TOKENS: &str = "karen_llm_tokens_total";
    pub const LLM_COST: &str = "karen_llm_cost_micros_total";
    pub const BUDGET_REJECTIONS: &str = "karen_budget_rejections_total";
    pub const RATE_LIMIT_REJECTIONS: &str = "karen_rate_limit_rejections_total";
    pub const RATE_LIMIT_FALLBACKS: &str = "karen_rate_limit_fallbacks_total";
    pub const CACHE_REQUESTS: &str = "karen_cache_requests_total";
    pub const JOBS: &str = "karen_jobs_total";
    pub const JOB_DURATION: &str = "karen_job_duration_seconds";
    pub const TENANT_REQUESTS: &str = "karen_tenant_requests_total";
    pub const TENANT_TOKENS: &str = "karen_tenant_tokens_total";
    pub const TENANT_COST: &str = "karen_tenant_cost_micros_total";
    pub const SEARCH_DURATION: &str = "karen_search_duration_seconds";
}

/// Background jobs, named as in the `job` label.
pub const JOBS: &[&str] = &["budget_reconcile", "reembed", "retention"];

/// Budget scopes, named as in the `scope` label.
pub const BUDGET_SCOPES: &[&str] = &["tenant", "user", "api_key"];

/// Creates the series that alerts read with `increase()`, at 0, so that the
/// first event counts.
pub fn register_zero_series() {
    for scope in BUDGET_SCOPES {
        metrics::counter!(names::BUDGET_REJECTIONS, "scope" => *scope).absolute(0);
    }
    for scope in ["tenant", "user", "api_key", "ip"] {
        metrics::counter!(names::RATE_LIMIT_REJECTIONS, "scope" => scope).absolute(0);
    }
    for mode in ["local", "open", "closed"] {
        metrics::counter!(names::RATE_LIMIT_FALLBACKS, "mode" => mode).absolute(0);
    }
    for job in JOBS {
        for outcome in ["ok", "failed"] {
            metrics::counter!(names::JOBS, "job" => *job, "outcome" => outcome).absolute(0);
        }
    }
}

/// The `provider` and `model` labels of a call. Providers and models that
/// tenants configure are not the operator's to enumerate, so they are all
/// `tenant`: the label sets stay bounded by the configuration.
pub fn llm_labels(provider: &str, model: &str) -> (String, String) {
    if provider.starts_with("tenant:") {
        ("tenant".to_owned(), "tenant".to_owned())
    } else {
        (provider.to_owned(), model.to_owned())
    }
}

/// A model call's tokens and cost.
pub fn llm_usage(provider: &str, model: &str, prompt: u32, completion: u32, cost_micros: i64) {
    let (provider, model) = llm_labels(provider, model);
    metrics::counter!(names::LLM_TOKENS, "provider" => provider.clone(), "model" => model.clone(), "direction" => "prompt")
        .increment(u64::from(prompt));
    metrics::counter!(names::LLM_TOKENS, "provider" => provider.clone(), "model" => model.clone(), "direction" => "completion")
        .increment(u64::from(completion));
    metrics::counter!(names::LLM_COST, "provider" => provider, "model" => model)
        .increment(u64::try_from(cost_micros).unwrap_or(0));
}

/// A call refused by a hard budget.
pub fn budget_rejected(scope: BudgetScope) {
    let scope = match scope {
        BudgetScope::Tenant => "tenant",
        BudgetScope::User(_) => "user",
        BudgetScope::ApiKey(_) => "api_key",
    };
    metrics::counter!(names::BUDGET_REJECTIONS, "scope" => scope).increment(1);
}

/// A request refused by a rate limit (`scope`: tenant, user, api_key or ip;
/// never a tenant label: per-tenant counts go through [`TenantSeries`]).
pub fn rate_limit_rejected(scope: karen_domain::rate_limit::RateLimitScope) {
    metrics::counter!(names::RATE_LIMIT_REJECTIONS, "scope" => scope.as_str()).increment(1);
}

/// A rate-limit check that the shared limiter (Redis) could not answer, by
/// the fail mode applied instead (`local`, `open` or `closed`).
pub fn rate_limit_fallback(mode: &'static str) {
    metrics::counter!(names::RATE_LIMIT_FALLBACKS, "mode" => mode).increment(1);
}

/// Records one search of an index (`vector` or `text`) and its backend.
pub fn search_finished(index: &'static str, backend: &str, took: Duration) {
    metrics::histogram!(names::SEARCH_DURATION, "index" => index, "backend" => backend.to_owned())
        .record(took.as_secs_f64());
}

/// A cache lookup.
pub fn cache_lookup(cache: &'static str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!(names::CACHE_REQUESTS, "cache" => cache, "result" => result).increment(1);
}

/// A background job run.
pub fn job_finished(job: &'static str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "failed" };
    metrics::counter!(names::JOBS, "job" => job, "outcome" => outcome).increment(1);
    metrics::histogram!(names::JOB_DURATION, "job" => job).record(took.as_secs_f64());
}

/// Counts for one tenant (or for everyone outside the top N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    requests: u64,
    tokens: u64,
    cost_micros: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.tokens += other.tokens;
        self.cost_micros += other.cost_micros;
    }
}

/// A tenant family: name, help text, and which count it shows.
type Family = (&'static str, &'static str, fn(&Tally) -> u64);

#[derive(Debug)]
struct TenantState {
    slug: String,
    total: Tally,
    /// Whether the tenant has a series of its own.
    member: bool,
}

#[derive(Debug, Default)]
struct SeriesState {
    tenants: HashMap<TenantId, TenantState>,
    /// What tenants outside the top N added (never decreases).
    other: Tally,
    chosen_at: Option<Instant>,
}

/// The per-tenant series: the top N tenants by requests, and `other`.
#[derive(Debug)]
pub struct TenantSeries {
    top: usize,
    every: Duration,
    state: Mutex<SeriesState>,
}

impl TenantSeries {
    /// Series for the `top` busiest tenants, re-chosen at most every `every`.
    pub fn new(top: usize, every: Duration) -> Self {
        Self {
            top,
            every,
            state: Mutex::new(SeriesState::default()),
        }
    }

    fn record(&self, tenant: TenantId, slug: &str, add: Tally) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let free = state.tenants.values().filter(|t| t.member).count() < self.top;
        let entry = state.tenants.entry(tenant).or_insert_with(|| TenantState {
            slug: slug.to_owned(),
            total: Tally::default(),
            // Until the top N is full, a newcomer gets a series at once.
            member: free,
        });
        if entry.slug != slug {
            slug.clone_into(&mut entry.slug);
        }
        entry.total.add(add);
        if !entry.member {
            state.other.add(add);
        }
    }

    /// One authenticated request of the tenant.
    pub fn request(&self, tenant: TenantId, slug: &str) {
        let add = Tally {
            requests: 1,
            ..Tally::default()
        };
        self.record(tenant, slug, add);
    }

    /// Tokens and cost of one of the tenant's model calls.
    pub fn usage(&self, tenant: TenantId, slug: &str, tokens: u64, cost_micros: i64) {
        let add = Tally {
            tokens,
            cost_micros: u64::try_from(cost_micros).unwrap_or(0),
            ..Tally::default()
        };
        self.record(tenant, slug, add);
    }

    /// Re-chooses the top N by requests. A tenant that leaves it loses its
    /// series (its later counts go to `other`); one that joins gets a series
    /// carrying its whole count, and `other` never decreases, so rates
    /// summed over the family stay right.
    fn choose(&self, state: &mut SeriesState) {
        let due = state.chosen_at.is_none_or(|at| at.elapsed() >= self.every);
        if !due {
            return;
        }
        state.chosen_at = Some(Instant::now());
        let mut ranked: Vec<(TenantId, u64)> = state
            .tenants
            .iter()
            .map(|(id, t)| (*id, t.total.requests))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let chosen: Vec<TenantId> = ranked.iter().take(self.top).map(|(id, _)| *id).collect();
        for (id, tenant) in &mut state.tenants {
            tenant.member = chosen.contains(id);
        }
    }

    /// The three tenant families in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.choose(&mut state);
        let mut rows: Vec<(String, Tally)> = state
            .tenants
            .values()
            .filter(|t| t.member)
            .map(|t| (t.slug.clone(), t.total))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.push(("other".to_owned(), state.other));
        let mut out = String::new();
        let families: [Family; 3] = [
            (
                names::TENANT_REQUESTS,
                "authenticated requests per tenant (top N, then other)",
                |t| t.requests,
            ),
            (
                names::TENANT_TOKENS,
                "model tokens per tenant (top N, then other)",
                |t| t.tokens,
            ),
            (
                names::TENANT_COST,
                "model cost per tenant in millionths (top N, then other)",
                |t| t.cost_micros,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (slug, tally) in &rows {
                let _ = writeln!(out, "{name}{{tenant=\"{slug}\"}} {}", value(tally));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series_lines(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn only_the_top_tenants_get_series_and_other_never_decreases() {
        let series = TenantSeries::new(2, Duration::ZERO);
        let tenants: Vec<TenantId> = (0..5).map(|_| TenantId::generate()).collect();
        for (i, tenant) in tenants.iter().enumerate() {
            for _ in 0..=i {
                series.request(*tenant, &format!("t{i}"));
            }
        }
        let text = series.render();
        let lines = series_lines(&text, names::TENANT_REQUESTS);
        assert_eq!(
            lines,
            vec![
                "karen_tenant_requests_total{tenant=\"t3\"} 4",
                "karen_tenant_requests_total{tenant=\"t4\"} 5",
                // t2, t3 and t4 arrived after the top 2 were full: 3 + 4 + 5.
                "karen_tenant_requests_total{tenant=\"other\"} 12",
            ]
        );
        // t0 and t1 fell out; t0 grows past everyone and takes a series back.
        for _ in 0..10 {
            series.request(tenants[0], "t0");
        }
        let text = series.render();
        let lines = series_lines(&text, names::TENANT_REQUESTS);
        assert_eq!(lines[0], "karen_tenant_requests_total{tenant=\"t0\"} 11");
        // Its ten requests counted under other while it was outside: other never decreases.
        assert_eq!(
            lines.last().unwrap(),
            "karen_tenant_requests_total{tenant=\"other\"} 22"
        );
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn a_thousand_tenants_make_at_most_top_plus_one_series() {
        let series = TenantSeries::new(20, Duration::ZERO);
        for i in 0..1000 {
            let tenant = TenantId::generate();
            series.request(tenant, &format!("tenant-{i}"));
            series.usage(tenant, &format!("tenant-{i}"), 10, 5);
        }
        let text = series.render();
        for name in [
            names::TENANT_REQUESTS,
            names::TENANT_TOKENS,
            names::TENANT_COST,
        ] {
            assert_eq!(series_lines(&text, name).len(), 21, "{name}");
        }
    }
}
