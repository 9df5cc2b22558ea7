//! `/metrics` after a scripted workload: every family of the contract in
//! `deploy/metrics.txt` (which the alert rules and dashboards are checked
//! against) is exposed with exactly its labels, route labels are templates,
//! per-tenant series are bounded, nothing secret leaks, and a separate
//! metrics listener keeps `/metrics` off the API port.

use std::collections::{BTreeMap, BTreeSet};

use karen_testkit::{Backend, TestApp, spawn_with};
use serde_json::json;

/// Families not exposed yet, and why (each must leave this list when its part lands).
const PENDING: &[(&str, &str)] = &[];

/// `(name, type, labels)` of every family in the contract.
fn contract() -> Vec<(String, String, BTreeSet<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/metrics.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            let labels = if parts[2] == "-" {
                BTreeSet::new()
            } else {
                parts[2].split(',').map(str::to_owned).collect()
            };
            (parts[0].to_owned(), parts[1].to_owned(), labels)
        })
        .collect()
}

type Sample = (BTreeMap<String, String>, f64);

/// Samples by series name (`_bucket`/`_sum`/`_count` kept), from the text format.
fn parse(text: &str) -> BTreeMap<String, Vec<Sample>> {
    let mut out: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.entry(name).or_default().push((labels, value));
    }
    out
}

fn value(samples: &BTreeMap<String, Vec<Sample>>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .get(name)
        .into_iter()
        .flatten()
        .filter(|(have, _)| {
            labels
                .iter()
                .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(base_url: &str) -> (u16, String, String) {
    let reply = reqwest::get(format!("{base_url}/metrics")).await.unwrap();
    let status = reply.status().as_u16();
    let kind = reply
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, reply.text().await.unwrap())
}

async fn workload(app: &TestApp) -> String {
    let acme = app.create_tenant("acme").await;
    let (_, key) = app
        .create_api_key(
            &acme.owner_token,
            json!({"name": "k", "scopes": ["chat:write"]}),
        )
        .await;
    let ask = json!({"model": "karen-offline-extractive", "messages": [{"role": "user", "content": "hi"}]});
    app.post("/v1/chat/completions", &key, ask.clone())
        .await
        .expect(200);
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    app.post("/v1/chat/completions", &key, streamed)
        .await
        .expect(200);
    app.post(
        "/v1/budgets",
        &acme.owner_token,
        json!({"scope": "tenant", "metric": "tokens", "period": "day", "limit": 1, "enforcement": "hard"}),
    )
    .await
    .expect(201);
    let refused = app.post("/v1/chat/completions", &key, ask).await;
    assert_eq!(refused.status, 429);
    app.post(
        "/v1/search",
        &acme.owner_token,
        json!({"query": "what do we know?"}),
    )
    .await
    .expect(200);
    app.get("/v1/no-such-route", &key).await.expect(404);
    app.get("/readyz", "").await.expect(200);
    key
}

async fn every_family_of_the_contract_is_exposed_after_a_workload(backend: Backend) {
    // Audit forwarding to a collector that is not there (port 9, discard):
    // a round counts a failure and measures the lag.
    let secret =
        std::env::temp_dir().join(format!("karen-metrics-{}.secret", uuid::Uuid::now_v7()));
    std::fs::write(&secret, "x".repeat(40)).unwrap();
    let Some(app) = spawn_with(backend, |c| {
        c.audit.forward.interval_secs = 3600;
        c.audit.forward.max_backoff_secs = 3600;
        c.audit.forward.webhook = Some(karen::audit_forward::WebhookConfig {
            url: "http://127.0.0.1:9/hook".into(),
            secret_file: Some(secret),
            timeout_secs: 2,
        });
    })
    .await
    else {
        return;
    };
    let key = workload(&app).await;
    let forwarder = app.karen.audit_forwarder.as_ref().unwrap();
    assert_eq!(forwarder.forward_all().await.unwrap().failures.len(), 1);
    let (status, kind, text) = scrape(&app.base_url).await;
    assert_eq!(status, 200, "no credential is needed");
    assert!(kind.starts_with("text/plain"), "{kind}");
    let samples = parse(&text);
    for (name, kind, labels) in contract() {
        if PENDING.iter().any(|(pending, _)| *pending == name) {
            assert!(
                !samples.contains_key(&name),
                "{name} is exposed: take it off PENDING"
            );
            continue;
        }
        let series = if kind == "histogram" {
            format!("{name}_bucket")
        } else {
            name.clone()
        };
        let found = samples
            .get(&series)
            .unwrap_or_else(|| panic!("{series} is missing from /metrics"));
        for (have, _) in found {
            let have: BTreeSet<String> = have.keys().filter(|k| *k != "le").cloned().collect();
            assert_eq!(have, labels, "labels of {series}");
        }
        if kind == "histogram" {
            assert!(samples.contains_key(&format!("{name}_sum")), "{name}_sum");
            assert!(
                samples.contains_key(&format!("{name}_count")),
                "{name}_count"
            );
        }
    }
    // Route templates, never raw paths; the 1 s bucket the latency SLO reads.
    let chat = [
        ("route", "/v1/chat/completions"),
        ("method", "POST"),
        ("status", "200"),
    ];
    assert_eq!(value(&samples, "karen_http_requests_total", &chat), 2.0);
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(
        value(&samples, "karen_http_requests_total", &unmatched),
        1.0
    );
    assert!(text.contains("le=\"1\"") || text.contains("le=\"1.0\""));
    for (labels, _) in &samples["karen_http_requests_total"] {
        assert!(!labels["route"].contains("no-such-route"), "{labels:?}");
    }
    let offline = [
        ("provider", "offline"),
        ("model", "karen-offline-extractive"),
    ];
    assert_eq!(
        value(
            &samples,
            "karen_llm_requests_total",
            &[offline[0], offline[1], ("outcome", "ok")]
        ),
        2.0
    );
    assert!(value(&samples, "karen_llm_tokens_total", &offline) > 0.0);
    assert_eq!(
        value(
            &samples,
            "karen_budget_rejections_total",
            &[("scope", "tenant")]
        ),
        1.0
    );
    assert!(
        value(
            &samples,
            "karen_tenant_requests_total",
            &[("tenant", "acme")]
        ) >= 3.0
    );
    assert!(
        value(
            &samples,
            "karen_cache_requests_total",
            &[("cache", "api_keys"), ("result", "hit")]
        ) >= 1.0
    );
    assert_eq!(value(&samples, "karen_ready", &[]), 1.0);
    assert!(
        !text.contains(&key) && !text.contains(&key[key.len() - 12..]),
        "no credential in the metrics"
    );
    app.stop().await;
}

async fn only_the_busiest_tenants_get_series_of_their_own(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| c.metrics.tenant_series = 2).await else {
        return;
    };
    for slug in ["one", "two", "three", "four", "five"] {
        let tenant = app.create_tenant(slug).await;
        app.get("/v1/me", &tenant.owner_token).await.expect(200);
    }
    let (_, _, text) = scrape(&app.base_url).await;
    let samples = parse(&text);
    let tenants: BTreeSet<&str> = samples["karen_tenant_requests_total"]
        .iter()
        .map(|(labels, _)| labels["tenant"].as_str())
        .collect();
    assert_eq!(tenants.len(), 3, "{tenants:?}");
    assert!(tenants.contains("other"));
    assert_eq!(value(&samples, "karen_tenant_requests_total", &[]), 5.0);
    app.stop().await;
}

async fn a_separate_metrics_listener_keeps_metrics_off_the_api_port(backend: Backend) {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap();
    drop(free);
    let Some(app) = spawn_with(backend, |c| c.metrics.listen = address.to_string()).await else {
        return;
    };
    let (status, _, _) = scrape(&app.base_url).await;
    assert_eq!(status, 404, "not on the API port");
    let (status, _, text) = scrape(&format!("http://{address}")).await;
    assert_eq!(status, 200);
    assert!(text.contains("karen_build_info"));
    app.stop().await;
}

/// `[cache] enabled = false` (what bench/caching.sh compares against): the
/// same workload gives the same answers, and every lookup reads the store.
async fn with_caches_off_every_lookup_is_a_miss(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| c.cache.enabled = false).await else {
        return;
    };
    let key = workload(&app).await;
    app.get("/v1/models", &key).await.expect(200);
    let (_, _, text) = scrape(&app.base_url).await;
    let samples = parse(&text);
    let lookups = |result| {
        value(
            &samples,
            "karen_cache_requests_total",
            &[("result", result)],
        )
    };
    assert_eq!(lookups("hit"), 0.0, "nothing is answered from a cache");
    assert!(
        value(
            &samples,
            "karen_cache_requests_total",
            &[("cache", "api_keys"), ("result", "miss")]
        ) >= 4.0
    );
    assert!(lookups("miss") >= 8.0);
    app.stop().await;
}

on_both_backends!(
    with_caches_off_every_lookup_is_a_miss,
    every_family_of_the_contract_is_exposed_after_a_workload,
    only_the_busiest_tenants_get_series_of_their_own,
    a_separate_metrics_listener_keeps_metrics_off_the_api_port,
);
