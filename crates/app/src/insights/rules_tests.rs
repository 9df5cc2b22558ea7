//! Each rule fires on numbers past its threshold, and stays silent below the
//! threshold or below its minimum number of samples.

use super::collector::RejectionKind;
use super::report::{
    CacheInsight, ModelChain, ModelUsageInsight, ProviderInsight, QueryInsight, RejectionInsight,
    RouteInsight, TenantUsage,
};
use super::rules::*;
use crate::assistant::ModelPrice;

fn route(requests: u64, p95: f64) -> RouteInsight {
    RouteInsight {
        route: "/v1/conversations/{conversation_id}/messages".into(),
        method: "POST".into(),
        requests,
        p50_seconds: p95 / 2.0,
        p95_seconds: p95,
        p99_seconds: p95,
        status_2xx: requests,
        status_3xx: 0,
        status_4xx: 0,
        status_5xx: 0,
    }
}

#[test]
fn route_slo_fires_above_one_second_with_enough_requests() {
    let fired = route_slo(&[route(120, 1.8)]);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].rule, "route_slo");
    assert!(
        fired[0]
            .message
            .contains("POST /v1/conversations/{conversation_id}/messages p95 1.8 s over 120 requests is above the 1.0 s SLO"),
        "{}",
        fired[0].message
    );
    assert_eq!(fired[0].evidence["p95_seconds"], 1.8);
    assert!(route_slo(&[route(120, 0.9)]).is_empty(), "within the SLO");
    assert!(
        route_slo(&[route(MIN_ROUTE_REQUESTS - 1, 5.0)]).is_empty(),
        "too few requests"
    );
}

fn query(queries: u64, p95: f64) -> QueryInsight {
    QueryInsight {
        operation: "select".into(),
        queries,
        p50_seconds: p95 / 2.0,
        p95_seconds: p95,
        p99_seconds: p95,
    }
}

#[test]
fn slow_queries_fire_above_the_threshold_with_enough_statements() {
    let fired = slow_queries(&[query(500, 0.3)]);
    assert_eq!(fired.len(), 1);
    assert!(
        fired[0]
            .message
            .contains("select statements p95 300 ms over 500 statements")
    );
    assert!(slow_queries(&[query(500, 0.05)]).is_empty());
    assert!(slow_queries(&[query(MIN_QUERIES - 1, 2.0)]).is_empty());
}

fn provider(name: &str, calls: u64, failures: u64, p95: f64) -> ProviderInsight {
    ProviderInsight {
        provider: name.into(),
        model: "gpt-4o".into(),
        calls,
        p50_seconds: p95 / 2.0,
        p95_seconds: p95,
        failures,
        error_rate: failures as f64 / calls as f64,
        timeouts: 0,
        rate_limited: 0,
        circuit_open: 0,
    }
}

#[test]
fn provider_errors_fire_above_the_rate_with_enough_calls() {
    let fired = provider_errors(&[provider("openai", 300, 36, 1.0)]);
    assert_eq!(fired.len(), 1);
    assert!(
        fired[0].message.contains(
            "provider openai failed 12% of 300 calls for model gpt-4o (36 failures, threshold 5%)"
        ),
        "{}",
        fired[0].message
    );
    assert!(provider_errors(&[provider("openai", 300, 6, 1.0)]).is_empty());
    assert!(provider_errors(&[provider("openai", MIN_PROVIDER_CALLS - 1, 10, 1.0)]).is_empty());
}

fn chain() -> Vec<ModelChain> {
    vec![ModelChain {
        model: "gpt-4o".into(),
        providers: vec!["primary".into(), "fallback".into()],
        aliases: vec!["smart".into()],
    }]
}

#[test]
fn provider_order_fires_when_a_fallback_is_much_faster() {
    let stats = [
        provider("primary", 200, 0, 4.1),
        provider("fallback", 40, 0, 0.9),
    ];
    let fired = provider_order(&stats, &chain());
    assert_eq!(fired.len(), 1);
    assert!(
        fired[0].message.starts_with(
            "provider primary p95 4.1 s over 200 calls vs fallback fallback p95 900 ms over 40 calls for model gpt-4o: list fallback before primary"
        ),
        "{}",
        fired[0].message
    );
    assert!(fired[0].message.contains("smart"));
    // Not fast enough, not enough calls, or already first: silent.
    let close = [
        provider("primary", 200, 0, 1.5),
        provider("fallback", 40, 0, 0.9),
    ];
    assert!(provider_order(&close, &chain()).is_empty());
    let few = [
        provider("primary", 200, 0, 4.1),
        provider("fallback", MIN_PROVIDER_CALLS - 1, 0, 0.9),
    ];
    assert!(provider_order(&few, &chain()).is_empty());
    let reversed = [
        provider("primary", 200, 0, 0.9),
        provider("fallback", 40, 0, 4.1),
    ];
    assert!(provider_order(&reversed, &chain()).is_empty());
    // Without a configured chain there is no order to change.
    assert!(provider_order(&stats, &[]).is_empty());
}

fn cache(hits: u64, misses: u64) -> CacheInsight {
    CacheInsight {
        cache: "embeddings".into(),
        hits,
        misses,
        lookups: hits + misses,
        hit_ratio: hits as f64 / (hits + misses) as f64,
    }
}

#[test]
fn cache_size_fires_below_the_floor_with_enough_lookups() {
    let fired = cache_size(&[cache(600, 4400)]);
    assert_eq!(fired.len(), 1);
    assert!(
        fired[0]
            .message
            .starts_with("cache hit ratio 12% for embeddings over 5,000 lookups"),
        "{}",
        fired[0].message
    );
    assert!(cache_size(&[cache(4000, 1000)]).is_empty());
    assert!(cache_size(&[cache(10, 400)]).is_empty(), "too few lookups");
}

#[test]
fn rejections_fire_from_the_minimum() {
    let row = |rejected| RejectionInsight {
        kind: RejectionKind::RateLimit,
        scope: "tenant".into(),
        rejected,
        peak_per_minute: rejected / 2,
    };
    let fired = rejections(&[row(240)], 15);
    assert_eq!(fired.len(), 1);
    assert!(
        fired[0].message.starts_with(
            "240 rate-limit rejections for scope tenant in the last 15 min (peak 120 in one minute)"
        ),
        "{}",
        fired[0].message
    );
    assert!(rejections(&[row(MIN_REJECTIONS - 1)], 15).is_empty());
}

fn prices() -> Vec<ModelPrice> {
    vec![
        ModelPrice {
            model: "big".into(),
            prompt_micros_per_1k: 5_000,
            completion_micros_per_1k: 15_000,
        },
        ModelPrice {
            model: "small".into(),
            prompt_micros_per_1k: 150,
            completion_micros_per_1k: 600,
        },
        ModelPrice {
            model: "unpriced".into(),
            prompt_micros_per_1k: 0,
            completion_micros_per_1k: 0,
        },
    ]
}

fn usage(model: &str, calls: i64, cost: i64, other_cost: i64) -> TenantUsage {
    let total = cost + other_cost;
    TenantUsage {
        tenant_id: uuid::Uuid::nil(),
        slug: "acme".into(),
        calls: calls + 10,
        cost_micros: total,
        models: vec![
            ModelUsageInsight {
                provider: "openai".into(),
                model: model.into(),
                calls,
                errors: 0,
                error_rate: 0.0,
                prompt_tokens: 100_000,
                completion_tokens: 20_000,
                cost_micros: cost,
                cost_share: cost as f64 / total as f64,
                mean_latency_seconds: 1.0,
            },
            ModelUsageInsight {
                provider: "openai".into(),
                model: "small".into(),
                calls: 10,
                errors: 0,
                error_rate: 0.0,
                prompt_tokens: 1_000,
                completion_tokens: 1_000,
                cost_micros: other_cost,
                cost_share: other_cost as f64 / total as f64,
                mean_latency_seconds: 1.0,
            },
        ],
    }
}

#[test]
fn model_cost_fires_when_most_spending_goes_to_a_much_dearer_model() {
    // big: 100k prompt + 20k completion = 500,000 + 300,000 micros; small: 15,000 + 12,000.
    let fired = model_cost(&usage("big", 100, 800_000, 200_000), &prices(), &[]).unwrap();
    assert_eq!(fired.rule, "model_cost");
    assert!(
        fired.message.starts_with(
            "tenant acme spends 80% of its cost on model big (100 calls, 100,000 prompt and 20,000 completion tokens); model small costs 29.6× less"
        ),
        "{}",
        fired.message
    );
    assert_eq!(fired.evidence["cheaper_cost_micros"], 27_000.0);
    // The cheaper model must be one the platform serves, when that is known.
    assert!(
        model_cost(
            &usage("big", 100, 800_000, 200_000),
            &prices(),
            &["big".into()]
        )
        .is_none()
    );
    // Spending spread out, too few calls, or the top model already cheapest: silent.
    assert!(model_cost(&usage("big", 100, 400_000, 600_000), &prices(), &[]).is_none());
    assert!(model_cost(&usage("big", 5, 800_000, 200_000), &prices(), &[]).is_none());
    assert!(model_cost(&usage("small", 100, 800_000, 200_000), &prices(), &[]).is_none());
}
