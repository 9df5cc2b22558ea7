//! Budgets: hard limits refuse before any upstream call and hold under
//! concurrent requests, on one server and across replicas; streams are cut
//! off at the limit; soft limits only warn; reservations of calls that never
//! finished become usage records, and the hold of a call whose reservation
//! was never written stops counting when it expires.

use std::time::Duration;

use karen_testkit::fake_llm::{Behaviour, FakeLlm};
use karen_testkit::{Backend, TestApp, TestTenant, spawn_with};
use serde_json::{Value, json};

use crate::assistant_upstream::through;

async fn budget(app: &TestApp, tenant: &TestTenant, body: Value) -> String {
    app.post("/v1/budgets", &tenant.owner_token, body)
        .await
        .expect(201)
        .str("id")
        .to_owned()
}

fn ask(text: &str) -> Value {
    json!({"model": "fake-echo", "messages": [{"role": "user", "content": text}]})
}

async fn used_tokens(app: &TestApp, token: &str) -> i64 {
    let usage = app.get("/v1/usage", token).await;
    let totals = &usage.expect(200).body["totals"];
    totals["prompt_tokens"].as_i64().unwrap() + totals["completion_tokens"].as_i64().unwrap()
}

async fn a_spent_hard_budget_refuses_before_calling_upstream(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    budget(&app, &acme, json!({"scope": "tenant", "metric": "tokens", "period": "day", "limit": 60, "enforcement": "hard"})).await;
    let token = acme.owner_token.as_str();
    let mut refused = None;
    for n in 0..20 {
        let reply = app
            .post(
                "/v1/chat/completions",
                token,
                ask(&format!("question number {n} please")),
            )
            .await;
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
        reply.expect(200);
    }
    let refused = refused.expect("the budget must run out");
    assert_eq!(refused.body["error"]["code"], "budget_exceeded");
    let detail = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        detail.contains("limit of 60 tokens per day") && detail.contains("resets at"),
        "{detail}"
    );
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    let calls = fake.requests();
    // Also through the conversation API (problem+json there), and nothing is stored.
    let chat = app
        .post("/v1/conversations", token, json!({}))
        .await
        .expect(201)
        .str("id")
        .to_owned();
    let turn = app
        .post(
            &format!("/v1/conversations/{chat}/messages"),
            token,
            // As large as the refused request: it cannot fit either.
            json!({"content": "question number 99 please"}),
        )
        .await;
    turn.expect_problem(429, "budget_exceeded");
    assert_eq!(
        fake.requests(),
        calls,
        "no upstream call after the budget ran out"
    );
    let messages = app
        .get(&format!("/v1/conversations/{chat}/messages"), token)
        .await;
    assert_eq!(
        messages.expect(200).body["items"].as_array().unwrap().len(),
        0
    );
    assert!(used_tokens(&app, token).await <= 60);
    // The next day the budget is fresh.
    app.clock.advance(Duration::from_secs(24 * 3600));
    let token = app
        .token("acme", &acme.owner_email, karen_testkit::PASSWORD)
        .await;
    app.post("/v1/chat/completions", &token, ask("new day"))
        .await
        .expect(200);
    app.stop().await;
}

async fn racing_requests_never_exceed_a_hard_limit(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let limit = 200;
    budget(&app, &acme, json!({"scope": "tenant", "metric": "tokens", "period": "month", "limit": limit, "enforcement": "hard"})).await;
    let token = acme.owner_token.clone();
    let calls = (0..12).map(|n| {
        let app = &app;
        let token = token.clone();
        async move {
            let mut body = ask(&format!("racing request number {n} with a few words"));
            body["max_tokens"] = json!(40);
            app.post("/v1/chat/completions", &token, body).await
        }
    });
    let replies = futures::future::join_all(calls).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(
        ok + refused,
        replies.len(),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    let used = used_tokens(&app, &token).await;
    assert!(used <= limit, "{used} tokens used under a limit of {limit}");
    app.stop().await;
}

async fn key_and_user_budgets_apply_to_their_subject_only(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (key_id, key) = app
        .create_api_key(&acme.owner_token, json!({"name": "tight"}))
        .await;
    budget(&app, &acme, json!({"scope": "api_key", "subject_id": key_id, "metric": "tokens", "period": "day", "limit": 5, "enforcement": "hard"})).await;
    let refused = app
        .post(
            "/v1/chat/completions",
            &key,
            ask("a question that is longer than five tokens for sure"),
        )
        .await;
    assert_eq!(refused.status, 429);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("API key {key_id}"))
    );
    // The same user with a session is not limited by the key's budget.
    app.post(
        "/v1/chat/completions",
        &acme.owner_token,
        ask("a question that is longer than five tokens for sure"),
    )
    .await
    .expect(200);
    // A user budget.
    let (member, member_token) = app.create_user(&acme, "m@acme.test", &["member"]).await;
    budget(&app, &acme, json!({"scope": "user", "subject_id": member, "metric": "tokens", "period": "day", "limit": 3, "enforcement": "hard"})).await;
    assert_eq!(
        app.post(
            "/v1/chat/completions",
            &member_token,
            ask("hello there friend")
        )
        .await
        .status,
        429
    );
    // Unknown subjects, bad values.
    let bad = [
        json!({"scope": "user", "subject_id": uuid::Uuid::now_v7(), "metric": "tokens", "period": "day", "limit": 5, "enforcement": "hard"}),
        json!({"scope": "user", "metric": "tokens", "period": "day", "limit": 5, "enforcement": "hard"}),
        json!({"scope": "tenant", "metric": "tokens", "period": "week", "limit": 5, "enforcement": "hard"}),
        json!({"scope": "tenant", "metric": "tokens", "period": "day", "limit": 0, "enforcement": "hard"}),
        json!({"scope": "tenant", "metric": "dollars", "period": "day", "limit": 5, "enforcement": "hard"}),
    ];
    for body in bad {
        app.post("/v1/budgets", &acme.owner_token, body)
            .await
            .expect_problem(422, "validation_failed");
    }
    app.stop().await;
}

async fn a_stream_is_cut_off_cleanly_at_the_limit(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    budget(&app, &acme, json!({"scope": "tenant", "metric": "tokens", "period": "day", "limit": 40, "enforcement": "hard"})).await;
    let token = acme.owner_token.as_str();
    let chat = app
        .post("/v1/conversations", token, json!({}))
        .await
        .expect(201)
        .str("id")
        .to_owned();
    // The fake ignores max_tokens: it would stream a long answer; Karen cuts it.
    fake.push(Behaviour::Chunked {
        chunks: 400,
        interval: Duration::from_millis(1),
    });
    let long = "please repeat this long sentence back to me ".repeat(3);
    let reply = app
        .post(
            &format!("/v1/conversations/{chat}/messages"),
            token,
            json!({"content": long, "stream": true}),
        )
        .await;
    reply.expect(200);
    let events = crate::assistant::sse_events(&reply.text);
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done", "{events:?}");
    assert_eq!(done["finish_reason"], "budget_exceeded");
    let messages = app
        .get(&format!("/v1/conversations/{chat}/messages"), token)
        .await;
    assert_eq!(
        messages.expect(200).body["items"][1]["status"],
        "interrupted"
    );
    let usage = app.get("/v1/usage", token).await;
    assert_eq!(usage.expect(200).body["items"][0]["status"], "budget_cut");
    assert!(
        fake.wait_for_cancelled_stream(Duration::from_secs(10))
            .await,
        "the upstream was not cancelled"
    );
    app.stop().await;
}

async fn soft_budgets_warn_without_refusing_and_budgets_have_their_own_permissions(
    backend: Backend,
) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let id = budget(&app, &acme, json!({"scope": "tenant", "metric": "tokens", "period": "day", "limit": 1, "enforcement": "soft"})).await;
    for _ in 0..3 {
        app.post(
            "/v1/chat/completions",
            &acme.owner_token,
            ask("over the soft limit"),
        )
        .await
        .expect(200);
    }
    let listed = app.get("/v1/budgets", &acme.owner_token).await;
    let entry = &listed.expect(200).body[0];
    assert_eq!(entry["id"], json!(id));
    assert!(entry["used"].as_i64().unwrap() > 1);
    assert!(entry["resets_at"].is_string());
    let (_, admin) = app.create_user(&acme, "admin@acme.test", &["admin"]).await;
    let (_, analyst) = app
        .create_user(&acme, "analyst@acme.test", &["analyst"])
        .await;
    let body = json!({"scope": "tenant", "metric": "tokens", "period": "day", "limit": 5, "enforcement": "hard"});
    app.post("/v1/budgets", &admin, body)
        .await
        .expect_problem(403, "permission_denied");
    app.get("/v1/budgets", &analyst).await.expect(200);
    app.delete(&format!("/v1/budgets/{id}"), &analyst)
        .await
        .expect_problem(403, "permission_denied");
    app.delete(&format!("/v1/budgets/{id}"), &acme.owner_token)
        .await
        .expect(204);
    app.delete(&format!("/v1/budgets/{id}"), &acme.owner_token)
        .await
        .expect_problem(404, "not_found");
    app.stop().await;
}

async fn reservations_of_calls_that_never_finished_become_usage(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    // A call reserved its budget, then the process died before settling it.
    app.reserve_in_flight(&acme).await;
    // While it might still be running, it counts against budgets but is not yet a record.
    assert_eq!(
        app.karen
            .services
            .assistant
            .budgets
            .reconcile_all()
            .await
            .unwrap(),
        0
    );
    app.clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(
        app.karen
            .services
            .assistant
            .budgets
            .reconcile_all()
            .await
            .unwrap(),
        1
    );
    let token = app
        .token("acme", &acme.owner_email, karen_testkit::PASSWORD)
        .await;
    let usage = app.get("/v1/usage", &token).await;
    let record = &usage.expect(200).body["items"][0];
    assert_eq!(record["status"], "interrupted");
    assert_eq!(record["prompt_tokens"], 10);
    assert_eq!(record["completion_tokens"], 90);
    assert_eq!(record["counted_locally"], true);
    app.stop().await;
}

on_both_backends!(
    a_spent_hard_budget_refuses_before_calling_upstream,
    racing_requests_never_exceed_a_hard_limit,
    key_and_user_budgets_apply_to_their_subject_only,
    a_stream_is_cut_off_cleanly_at_the_limit,
    soft_budgets_warn_without_refusing_and_budgets_have_their_own_permissions,
    reservations_of_calls_that_never_finished_become_usage,
);

async fn the_allowance_sent_upstream_is_what_was_reserved_and_aliases_are_priced(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| {
        through(&fake, c);
        c.llm.prices.push(karen::config::PriceEntry {
            model: "fake-echo".into(),
            prompt_per_1k_micros: 1_000,
            completion_per_1k_micros: 2_000,
        });
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let limit = 1_000_000;
    budget(&app, &acme, json!({"scope": "tenant", "metric": "tokens", "period": "day", "limit": limit, "enforcement": "hard"})).await;
    // No max_tokens: the call may produce what was reserved (the default allowance), not the whole budget.
    app.post("/v1/chat/completions", &acme.owner_token, ask("hello"))
        .await
        .expect(200);
    let sent = fake.last_request().unwrap()["max_tokens"].as_i64().unwrap();
    assert_eq!(
        sent,
        i64::from(karen_app::assistant::DEFAULT_COMPLETION_ALLOWANCE)
    );
    // Called through an alias, the call is priced as the model it resolves to.
    let mut body = ask("hello");
    body["model"] = json!("fast");
    app.post("/v1/chat/completions", &acme.owner_token, body)
        .await
        .expect(200);
    let usage = app.get("/v1/usage", &acme.owner_token).await;
    let last = &usage.expect(200).body["items"][1];
    assert_eq!(last["model"], "fake-echo");
    assert!(last["cost_micros"].as_i64().unwrap() > 0, "{last}");
    app.stop().await;
}

on_both_backends!(the_allowance_sent_upstream_is_what_was_reserved_and_aliases_are_priced);

/// The tokens Karen reserves for a prompt of one user message (its local
/// estimate: the text plus 4 per message).
fn reserved_prompt(text: &str) -> i64 {
    i64::from(karen_domain::chat::estimate_tokens(text)) + 4
}

/// A completion refused by a hard budget (OpenAI's error shape).
fn refused_by_budget(reply: &karen_testkit::Reply) {
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert_eq!(
        reply.body["error"]["code"], "budget_exceeded",
        "{}",
        reply.text
    );
}

const RACE_PROMPT: &str = "a racing request with a handful of words in it";
const RACE_MAX_TOKENS: i64 = 40;
/// Calls that fit the race's budget.
const RACE_ALLOWED: usize = 5;
const RACE_CALLS: usize = 24;

/// A hard budget room for exactly [`RACE_ALLOWED`] racing calls: after
/// them, only the prompt would fit, and a call needs at least one
/// completion token more.
fn race_limit() -> i64 {
    let per_call = reserved_prompt(RACE_PROMPT) + RACE_MAX_TOKENS;
    per_call * i64::try_from(RACE_ALLOWED).unwrap() + reserved_prompt(RACE_PROMPT)
}

/// Sends [`RACE_CALLS`] completions at once, alternating between `servers`;
/// every upstream answer is slow, so all calls reserve before any settles.
/// Returns how many succeeded; the others must be refused by the budget.
async fn race(fake: &FakeLlm, servers: &[&TestApp], token: &str) -> usize {
    for _ in 0..RACE_CALLS {
        fake.push(Behaviour::Slow(Duration::from_secs(5)));
    }
    let calls = (0..RACE_CALLS).map(|n| {
        let server = servers[n % servers.len()];
        async move {
            let mut body = ask(RACE_PROMPT);
            body["max_tokens"] = json!(RACE_MAX_TOKENS);
            server.post("/v1/chat/completions", token, body).await
        }
    });
    let replies = futures::future::join_all(calls).await;
    let mut ok = 0;
    for reply in replies {
        if reply.status == 200 {
            ok += 1;
        } else {
            refused_by_budget(&reply);
        }
    }
    ok
}

async fn exactly_the_calls_that_fit_win_a_race(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let limit = race_limit();
    budget(&app, &acme, json!({"scope": "tenant", "metric": "tokens", "period": "month", "limit": limit, "enforcement": "hard"})).await;
    let ok = race(&fake, &[&app], &acme.owner_token).await;
    assert_eq!(ok, RACE_ALLOWED, "a limit of {limit} tokens");
    assert!(used_tokens(&app, &acme.owner_token).await <= limit);
    // Settled, the calls used less than they reserved: the rest is free again.
    app.post(
        "/v1/chat/completions",
        &acme.owner_token,
        ask("after the race"),
    )
    .await
    .expect(200);
    app.stop().await;
}

on_both_backends!(exactly_the_calls_that_fit_win_a_race);

/// Two replicas on one PostgreSQL and one Redis hold one budget between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hold_one_hard_budget() {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(Backend::Postgres, |c| through(&fake, c)).await else {
        return;
    };
    let replica = app.replica().await;
    let acme = app.create_tenant("acme").await;
    let limit = race_limit();
    budget(&app, &acme, json!({"scope": "tenant", "metric": "tokens", "period": "month", "limit": limit, "enforcement": "hard"})).await;
    let ok = race(&fake, &[&app, &replica], &acme.owner_token).await;
    assert_eq!(ok, RACE_ALLOWED, "a limit of {limit} tokens");
    let used = used_tokens(&replica, &acme.owner_token).await;
    assert!(used <= limit, "{used} tokens used under a limit of {limit}");
    replica.stop().await;
    app.stop().await;
}

/// A call whose process died after it took its hold but before its
/// reservation's row was written leaves a hold with no row: it counts until
/// it expires (the reservation's time to live plus a grace), then the budget
/// is free again. One whose row was written becomes an interrupted usage
/// record (see above) and stays counted.
async fn the_hold_of_a_call_that_died_unwritten_expires(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let limit = 400;
    let id = budget(&app, &acme, json!({"scope": "tenant", "metric": "tokens", "period": "month", "limit": limit, "enforcement": "hard"})).await;
    // The first call seeds the month's running total.
    app.post("/v1/chat/completions", &acme.owner_token, ask("hello"))
        .await
        .expect(200);
    let used = used_tokens(&app, &acme.owner_token).await;
    // The dead call's hold: the rest of the budget, as a real one would hold it.
    let now = karen_domain::Clock::now(app.clock.as_ref());
    let month = karen_domain::budget::BudgetPeriod::Month.window(now).0;
    let key = karen_domain::ports::CacheKey::tenant(
        karen_domain::TenantId::from_uuid(acme.id),
        "budget",
        &format!("{id}:{}", month.unix_timestamp()),
    );
    let expires = now + time::Duration::minutes(15 + 5);
    let hold = karen_domain::ports::BudgetHold {
        id: uuid::Uuid::now_v7().to_string(),
        amount: limit - used,
        expires_at_ms: karen_domain::clock::to_millis(expires),
    };
    let now_ms = karen_domain::clock::to_millis(now);
    let held = app
        .karen
        .counters
        .budget_reserve(&key, &hold, limit, now_ms)
        .await
        .unwrap();
    assert_eq!(held, karen_domain::ports::BudgetReserve::Held(limit));
    let calls = fake.requests();
    refused_by_budget(
        &app.post("/v1/chat/completions", &acme.owner_token, ask("held back"))
            .await,
    );
    // Past the reservation's time to live the reconciler finds no row for it;
    // the hold still counts during the grace.
    app.clock.advance(Duration::from_secs(16 * 60));
    let budgets = &app.karen.services.assistant.budgets;
    assert_eq!(budgets.reconcile_all().await.unwrap(), 0);
    let token = app
        .token("acme", &acme.owner_email, karen_testkit::PASSWORD)
        .await;
    refused_by_budget(
        &app.post("/v1/chat/completions", &token, ask("held back"))
            .await,
    );
    assert_eq!(fake.requests(), calls, "nothing was sent upstream");
    // Then it is gone.
    app.clock.advance(Duration::from_secs(5 * 60));
    let token = app
        .token("acme", &acme.owner_email, karen_testkit::PASSWORD)
        .await;
    app.post("/v1/chat/completions", &token, ask("free again"))
        .await
        .expect(200);
    app.stop().await;
}

/// A reservation whose row was written and whose call never settled keeps
/// its budget (seeded from the store by a server that never saw the call),
/// and once reconciled counts as what it reserved.
async fn a_written_reservation_of_a_dead_call_counts_until_reconciled_and_after(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    // 10 prompt + 90 completion tokens, reserved by a process that died.
    app.reserve_in_flight(&acme).await;
    let prompt = reserved_prompt("hello");
    let limit = 100 + prompt + 1;
    budget(&app, &acme, json!({"scope": "tenant", "metric": "tokens", "period": "month", "limit": limit, "enforcement": "hard"})).await;
    // Exactly one completion token is left beside the dead call's reservation.
    let mut body = ask("hello");
    body["max_tokens"] = json!(50);
    app.post("/v1/chat/completions", &acme.owner_token, body)
        .await
        .expect(200);
    assert_eq!(fake.last_request().unwrap()["max_tokens"], 1);
    app.clock.advance(Duration::from_secs(16 * 60));
    let budgets = &app.karen.services.assistant.budgets;
    assert_eq!(budgets.reconcile_all().await.unwrap(), 1);
    // Reconciled, it is a usage record of 100 tokens: still counted.
    let token = app
        .token("acme", &acme.owner_email, karen_testkit::PASSWORD)
        .await;
    let used = used_tokens(&app, &token).await;
    assert!(used >= 100, "{used}");
    refused_by_budget(&app.post("/v1/chat/completions", &token, ask("hello")).await);
    app.stop().await;
}

on_both_backends!(
    the_hold_of_a_call_that_died_unwritten_expires,
    a_written_reservation_of_a_dead_call_counts_until_reconciled_and_after,
);
