//! Insights over HTTP: the operator's report (this process and every
//! tenant's usage) and a tenant's report (its own usage only), who may read
//! each, and that a tenant never sees another tenant's numbers.

use karen_testkit::fake_llm::FakeLlm;
use karen_testkit::{Backend, spawn_with};
use serde_json::{Value, json};

use crate::assistant_upstream::through;

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn price(model: &str, prompt: i64, completion: i64) -> karen::config::PriceEntry {
    karen::config::PriceEntry {
        model: model.into(),
        prompt_per_1k_micros: prompt,
        completion_per_1k_micros: completion,
    }
}

fn recommendations<'a>(report: &'a Value, rule: &str) -> Vec<&'a Value> {
    report["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rule"] == rule)
        .collect()
}

async fn operators_see_everything_and_tenants_only_their_own_usage(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| {
        through(&fake, c);
        c.llm.prices = vec![
            price("fake-echo", 5_000, 15_000),
            price("fake-chunked", 150, 600),
        ];
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let bravo = app.create_tenant("bravo").await;
    // acme spends everything on the dear model, often enough to be judged.
    for n in 0..karen_app::insights::MIN_USAGE_CALLS {
        app.post(
            "/v1/chat/completions",
            &acme.owner_token,
            ask("fake-echo", &format!("question {n}")),
        )
        .await
        .expect(200);
    }
    app.post(
        "/v1/chat/completions",
        &bravo.owner_token,
        ask("fake-chunked", "one question"),
    )
    .await
    .expect(200);

    // The operator: process numbers, both tenants, and the cost recommendation.
    let report = app
        .get("/v1/admin/insights?window=15m", &app.operator_key)
        .await;
    let report = &report.expect(200).body;
    assert_eq!(report["window_minutes"], 15);
    let routes = report["process"]["slowest_routes"].as_array().unwrap();
    assert!(!routes.is_empty(), "{report}");
    for route in routes {
        assert!(
            !route["route"]
                .as_str()
                .unwrap()
                .contains(&acme.id.to_string()),
            "routes are templates"
        );
    }
    // The recorder layer fed the collector from the metrics every call site already records.
    let providers = report["process"]["providers"].as_array().unwrap();
    let echo = providers
        .iter()
        .find(|p| p["provider"] == "fake" && p["model"] == "fake-echo")
        .unwrap_or_else(|| panic!("no fake/fake-echo row: {report}"));
    assert!(
        echo["calls"].as_u64().unwrap() >= 20 && echo["p95_seconds"].as_f64().unwrap() > 0.0,
        "{echo}"
    );
    let chat = routes
        .iter()
        .find(|r| r["route"] == "/v1/chat/completions" && r["method"] == "POST");
    assert!(
        chat.is_some_and(|r| r["status_2xx"].as_u64().unwrap() >= 21),
        "{report}"
    );
    assert!(
        !report["process"]["slow_queries"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{report}"
    );
    let slugs: Vec<&str> = report["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert!(
        slugs.contains(&"acme") && slugs.contains(&"bravo"),
        "{slugs:?}"
    );
    let acme_cost: Vec<_> = recommendations(report, "model_cost")
        .into_iter()
        .filter(|r| r["subject"] == "acme")
        .collect();
    assert_eq!(acme_cost.len(), 1, "{report}");
    let message = acme_cost[0]["message"].as_str().unwrap();
    assert!(
        message.contains("spends 100% of its cost on model fake-echo")
            && message.contains("model fake-chunked costs"),
        "{message}"
    );
    assert!(acme_cost[0]["evidence"]["cheaper_factor"].as_f64().unwrap() >= 3.0);

    // Tenant credentials are not operator keys; no credential is refused too.
    app.get("/v1/admin/insights", &acme.owner_token)
        .await
        .expect_problem(401, "invalid_token");
    let anonymous = app.call("GET", "/v1/admin/insights", None, None).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    // A bad window is the caller's mistake, named.
    app.get("/v1/admin/insights?window=2d", &app.operator_key)
        .await
        .expect_problem(422, "validation_failed");

    // acme's admin: its own usage, its recommendation, nothing process-wide, nothing of bravo's.
    let own = app.get("/v1/tenant/insights", &acme.owner_token).await;
    let own = own.expect(200);
    assert!(own.body["process"].is_null(), "{}", own.text);
    let usage = own.body["usage"].as_array().unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["slug"], "acme");
    assert_eq!(
        usage[0]["calls"].as_i64().unwrap(),
        karen_app::insights::MIN_USAGE_CALLS
    );
    assert_eq!(recommendations(&own.body, "model_cost").len(), 1);
    for foreign in ["bravo", &bravo.id.to_string()] {
        assert!(!own.text.contains(foreign), "bravo's data in acme's report");
    }
    // bravo sees its one call and nothing of acme's.
    let other = app
        .get("/v1/tenant/insights?window=1h", &bravo.owner_token)
        .await;
    let other = other.expect(200);
    assert_eq!(other.body["usage"][0]["models"][0]["model"], "fake-chunked");
    for foreign in ["acme", "fake-echo", &acme.id.to_string()] {
        assert!(
            !other.text.contains(foreign),
            "acme's data in bravo's report"
        );
    }
    assert!(recommendations(&other.body, "model_cost").is_empty());

    // usage:read decides: an analyst may, a member may not, nor an operator key.
    let (_, analyst) = app
        .create_user(&acme, "analyst@acme.test", &["analyst"])
        .await;
    app.get("/v1/tenant/insights", &analyst).await.expect(200);
    let (_, member) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;
    app.get("/v1/tenant/insights", &member)
        .await
        .expect_problem(403, "permission_denied");
    app.get("/v1/tenant/insights", &app.operator_key)
        .await
        .expect_problem(401, "invalid_token");
    app.get("/v1/tenant/insights?window=0m", &acme.owner_token)
        .await
        .expect_problem(422, "validation_failed");
    app.stop().await;
}

/// Liveness never touches a store; readiness does, and fails while draining.
async fn liveness_does_not_depend_on_the_database_and_readiness_does(backend: Backend) {
    let Some(mut app) = spawn_with(backend, |_| {}).await else {
        return;
    };
    app.call("GET", "/healthz", None, None).await.expect(200);
    let ready = app.call("GET", "/readyz", None, None).await;
    let ready = ready.expect(200);
    let names: Vec<&str> = ready.body["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.body_name())
        .collect();
    assert!(names.contains(&"database"), "{}", ready.text);
    // The database goes away: readiness fails, liveness does not.
    app.karen.store.close().await;
    app.call("GET", "/healthz", None, None).await.expect(200);
    let unready = app.call("GET", "/readyz", None, None).await;
    assert_eq!(unready.status, 503, "{}", unready.text);
    assert_eq!(unready.body["status"], "unavailable");
    app.shutdown_gracefully().await;
}

trait ComponentName {
    fn body_name(&self) -> &str;
}

impl ComponentName for Value {
    fn body_name(&self) -> &str {
        self["name"].as_str().unwrap_or_default()
    }
}

on_both_backends!(
    operators_see_everything_and_tenants_only_their_own_usage,
    liveness_does_not_depend_on_the_database_and_readiness_does
);
