//! The insight service: builds the operator's and a tenant's report.

use std::sync::Arc;
use std::time::Duration;

use karen_domain::page::PageRequest;
use karen_domain::permission::Permission;
use karen_domain::ports::{ModelUsage, UsageFilter};
use karen_domain::principal::OperatorPrincipal;
use karen_domain::{Error, Result, TenantContext, TenantId, TenantScope};

use super::collector::{DEFAULT_WINDOW_MINUTES, InsightCollector};
use super::report::{InsightReport, ModelChain, ModelUsageInsight, ProcessInsights, TenantUsage};
use super::rules::{self, Recommendation};
use crate::Deps;

/// Tenants listed in the operator's report (the costliest; the rules judge all).
const REPORTED_TENANTS: usize = 20;

/// What insights read besides the store.
#[derive(Clone, Default)]
pub struct InsightPorts {
    /// The process's collector (`None` when metrics are off).
    pub collector: Option<Arc<InsightCollector>>,
    /// The configured providers of each model, in the order they are tried.
    pub chains: Vec<ModelChain>,
}

/// The window of a report in minutes, from `15m` or `2h` (default: all the
/// collector keeps); at most `max`.
pub fn parse_window(text: Option<&str>, max: u32) -> Result<u32> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(max);
    };
    let invalid = || {
        Error::invalid(
            Some("window"),
            format!(
                "window must be minutes or hours such as 15m or 1h, from 1m to {max}m (insights.window_minutes)"
            ),
        )
    };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let per_unit = match unit {
        "m" => 1,
        "h" => 60,
        _ => return Err(invalid()),
    };
    let minutes = number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit))
        .filter(|m| (1..=max).contains(m))
        .ok_or_else(invalid)?;
    Ok(minutes)
}

/// A tenant's per-model sums as a report row.
fn tenant_usage(tenant_id: TenantId, slug: String, rows: Vec<ModelUsage>) -> TenantUsage {
    let calls = rows.iter().map(|r| r.calls).sum();
    let cost_micros: i64 = rows.iter().map(|r| r.cost_micros).sum();
    let share = |part: i64, whole: i64| {
        if whole > 0 {
            part as f64 / whole as f64
        } else {
            0.0
        }
    };
    TenantUsage {
        tenant_id: tenant_id.as_uuid(),
        slug,
        calls,
        cost_micros,
        models: rows
            .into_iter()
            .map(|r| ModelUsageInsight {
                error_rate: share(r.errors, r.calls),
                cost_share: share(r.cost_micros, cost_micros),
                mean_latency_seconds: share(r.latency_ms, r.calls) / 1000.0,
                provider: r.provider,
                model: r.model,
                calls: r.calls,
                errors: r.errors,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                cost_micros: r.cost_micros,
            })
            .collect(),
    }
}

/// The insight service.
#[derive(Clone)]
pub struct InsightService {
    deps: Arc<Deps>,
}

impl InsightService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// The longest window a report may cover.
    pub fn window_limit(&self) -> u32 {
        self.deps
            .insights
            .collector
            .as_ref()
            .map_or(DEFAULT_WINDOW_MINUTES, |c| c.window_minutes())
    }

    fn usage_filter(&self, minutes: u32) -> UsageFilter {
        UsageFilter {
            from: Some(self.deps.clock.now() - Duration::from_secs(u64::from(minutes) * 60)),
            ..UsageFilter::default()
        }
    }

    /// The models the platform serves (the cheaper models the cost rule may name).
    fn served_models(&self) -> Vec<String> {
        self.deps
            .insights
            .chains
            .iter()
            .map(|c| c.model.clone())
            .collect()
    }

    fn cost_rule(&self, usage: &[TenantUsage]) -> Vec<Recommendation> {
        let served = self.served_models();
        usage
            .iter()
            .filter_map(|t| rules::model_cost(t, &self.deps.assistant.prices, &served))
            .collect()
    }

    /// The operator's report: this process's numbers and every tenant's usage.
    pub async fn platform(
        &self,
        operator: &OperatorPrincipal,
        window: Option<&str>,
    ) -> Result<InsightReport> {
        let minutes = parse_window(window, self.window_limit())?;
        let filter = self.usage_filter(minutes);
        let mut usage = Vec::new();
        let mut page = PageRequest {
            after: None,
            limit: 200,
        };
        loop {
            let mut tx = self.deps.store.platform().await?;
            let mut tenants = tx.list_tenants(&page).await?;
            tx.commit().await?;
            let more = tenants.len() > page.limit as usize;
            tenants.truncate(page.limit as usize);
            for tenant in &tenants {
                let scope = TenantScope::operator(tenant.id, operator.key_id);
                let mut tx = self.deps.store.tenant_read(scope).await?;
                let rows = tx.usage().usage_by_model(&filter).await?;
                tx.commit().await?;
                if !rows.is_empty() {
                    usage.push(tenant_usage(tenant.id, tenant.slug.to_string(), rows));
                }
            }
            match tenants.last() {
                Some(last) if more => page.after = Some(last.id.as_uuid()),
                _ => break,
            }
        }
        usage.sort_by(|a, b| {
            b.cost_micros
                .cmp(&a.cost_micros)
                .then(b.calls.cmp(&a.calls))
        });
        let process = self
            .deps
            .insights
            .collector
            .as_ref()
            .map(|c| ProcessInsights::from_totals(c.totals(minutes)));
        let mut recommendations = Vec::new();
        if let Some(p) = &process {
            recommendations.extend(rules::route_slo(&p.slowest_routes));
            recommendations.extend(rules::provider_errors(&p.providers));
            recommendations.extend(rules::provider_order(
                &p.providers,
                &self.deps.insights.chains,
            ));
            recommendations.extend(rules::slow_queries(&p.slow_queries));
            recommendations.extend(rules::cache_size(&p.caches));
            recommendations.extend(rules::rejections(&p.rejections, minutes));
        }
        recommendations.extend(self.cost_rule(&usage));
        usage.truncate(REPORTED_TENANTS);
        Ok(InsightReport {
            window_minutes: minutes,
            generated_at: self.deps.clock.now(),
            process: process.map(ProcessInsights::shown),
            usage,
            recommendations,
        })
    }

    /// A tenant's report: its own usage and the recommendations drawn from it
    /// (never process-wide numbers, which mix every tenant's traffic).
    pub async fn tenant(&self, ctx: &TenantContext, window: Option<&str>) -> Result<InsightReport> {
        ctx.require(Permission::UsageRead)?;
        let minutes = parse_window(window, self.window_limit())?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let rows = tx
            .usage()
            .usage_by_model(&self.usage_filter(minutes))
            .await?;
        tx.commit().await?;
        let principal = ctx.principal();
        let usage = if rows.is_empty() {
            Vec::new()
        } else {
            vec![tenant_usage(
                principal.tenant_id,
                principal.tenant_slug.to_string(),
                rows,
            )]
        };
        Ok(InsightReport {
            window_minutes: minutes,
            generated_at: self.deps.clock.now(),
            process: None,
            recommendations: self.cost_rule(&usage),
            usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_minutes_or_hours_within_the_limit() {
        assert_eq!(parse_window(None, 60).unwrap(), 60);
        assert_eq!(parse_window(Some("15m"), 60).unwrap(), 15);
        assert_eq!(parse_window(Some("1h"), 60).unwrap(), 60);
        for bad in [
            "0m",
            "2h",
            "61m",
            "15",
            "m",
            "-5m",
            "1.5h",
            "15s",
            "99999999999h",
        ] {
            let error = parse_window(Some(bad), 60).unwrap_err();
            assert!(
                matches!(&error, Error::Invalid { field: Some(f), .. } if f == "window"),
                "{bad}: {error:?}"
            );
        }
    }
}
