//! The usage writer (group commit) and the budget cache: every call of a
//! concurrent batch is recorded exactly once, a record is committed before
//! its response is sent (so a stopped or restarted server has lost nothing),
//! and a budget created while callers' budgets are cached binds on the next
//! request, on every replica.

use karen_testkit::fake_llm::FakeLlm;
use karen_testkit::{Backend, TestApp, spawn_with};
use serde_json::{Value, json};

use crate::assistant_upstream::through;

fn ask(text: &str) -> Value {
    json!({"model": "fake-echo", "messages": [{"role": "user", "content": text}]})
}

/// `(calls, prompt + completion tokens)` of the tenant's usage.
async fn usage(app: &TestApp, token: &str) -> (i64, i64) {
    let usage = app.get("/v1/usage", token).await;
    let totals = &usage.expect(200).body["totals"];
    (
        totals["calls"].as_i64().unwrap(),
        totals["prompt_tokens"].as_i64().unwrap() + totals["completion_tokens"].as_i64().unwrap(),
    )
}

/// Sends `count` completions at once; all must succeed.
async fn concurrent_calls(app: &TestApp, token: &str, count: usize, label: &str) {
    let calls = (0..count).map(|n| async move {
        app.post(
            "/v1/chat/completions",
            token,
            ask(&format!("{label} call number {n}")),
        )
        .await
    });
    for reply in futures::future::join_all(calls).await {
        reply.expect(200);
    }
}

async fn concurrent_calls_are_each_recorded_exactly_once(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    // No budget: nothing is reserved, the writer commits the records in batches.
    concurrent_calls(&app, token, 40, "unbudgeted").await;
    let (calls, _) = usage(&app, token).await;
    assert_eq!(calls, 40);
    let usage_page = app.get("/v1/usage?limit=100", token).await;
    let items = usage_page.expect(200).body["items"]
        .as_array()
        .unwrap()
        .clone();
    let mut ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 40, "every call has its own record");
    // A hard budget that never binds: each call reserves, and its batch
    // replaces the reservation with the record in one transaction.
    let created = app
        .post(
            "/v1/budgets",
            token,
            json!({"scope": "tenant", "metric": "tokens", "period": "day", "limit": 1_000_000, "enforcement": "hard"}),
        )
        .await;
    created.expect(201);
    concurrent_calls(&app, token, 40, "budgeted").await;
    let (calls, tokens) = usage(&app, token).await;
    assert_eq!(calls, 80);
    // What the budget counts as used is exactly the records: no reservation is left over.
    let budgets = app.get("/v1/budgets", token).await;
    let used = budgets.expect(200).body[0]["used"].as_i64().unwrap();
    assert_eq!(used, tokens);
    app.stop().await;
}

async fn usage_is_committed_before_the_response_and_survives_a_restart(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    concurrent_calls(&app, &acme.owner_token, 20, "durable").await;
    // Read at once by another server process on the same store (PostgreSQL),
    // or the same one (SQLite): the records are committed, not queued.
    let reader = match backend {
        Backend::Postgres => Some(app.replica().await),
        Backend::Sqlite => None,
    };
    let (calls, tokens) = usage(reader.as_ref().unwrap_or(&app), &acme.owner_token).await;
    assert_eq!(calls, 20);
    if let Some(reader) = reader {
        reader.stop().await;
    }
    // A restart (the writer drains on shutdown) neither loses nor repeats any.
    let app = app.restart().await;
    let token = app
        .token("acme", &acme.owner_email, karen_testkit::PASSWORD)
        .await;
    assert_eq!(usage(&app, &token).await, (calls, tokens));
    concurrent_calls(&app, &token, 5, "after the restart").await;
    assert_eq!(usage(&app, &token).await.0, 25);
    app.stop().await;
}

async fn a_new_hard_budget_binds_on_the_next_request(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let replica = match backend {
        Backend::Postgres => Some(app.replica().await),
        Backend::Sqlite => None,
    };
    let other = replica.as_ref().unwrap_or(&app);
    let acme = app.create_tenant("acme").await;
    let (key_id, key) = app
        .create_api_key(&acme.owner_token, json!({"name": "app"}))
        .await;
    // Both servers now hold "no budget applies" in their caches.
    for server in [&app, other] {
        for n in 0..3 {
            server
                .post("/v1/chat/completions", &key, ask(&format!("warm up {n}")))
                .await
                .expect(200);
        }
    }
    let created = app
        .post(
            "/v1/budgets",
            &acme.owner_token,
            json!({"scope": "api_key", "subject_id": key_id, "metric": "tokens", "period": "day", "limit": 5, "enforcement": "hard"}),
        )
        .await;
    let budget_id = created.expect(201).str("id").to_owned();
    let calls = fake.requests();
    for server in [&app, other] {
        let refused = server
            .post(
                "/v1/chat/completions",
                &key,
                ask("the next request after the budget was created"),
            )
            .await;
        refused.expect(429);
        assert_eq!(refused.body["error"]["code"], "budget_exceeded");
    }
    assert_eq!(fake.requests(), calls, "nothing was sent upstream");
    // Deleting it lifts the limit on the next request too.
    app.delete(&format!("/v1/budgets/{budget_id}"), &acme.owner_token)
        .await
        .expect(204);
    for server in [&app, other] {
        server
            .post("/v1/chat/completions", &key, ask("free again"))
            .await
            .expect(200);
    }
    if let Some(replica) = replica {
        replica.stop().await;
    }
    app.stop().await;
}

on_both_backends!(
    concurrent_calls_are_each_recorded_exactly_once,
    usage_is_committed_before_the_response_and_survives_a_restart,
    a_new_hard_budget_binds_on_the_next_request,
);
