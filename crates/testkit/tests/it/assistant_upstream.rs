//! Chat turns through the whole server against a fake OpenAI-compatible
//! upstream: what is sent (persona, history), what is stored and metered,
//! streaming, client disconnects, upstream failures and fallback.

use std::time::Duration;

use futures::StreamExt as _;
use karen::config::{Config, ProviderEntry};
use karen_testkit::fake_llm::{Behaviour, FakeLlm, echo_text, refused_base_url};
use karen_testkit::{Backend, TestApp, spawn_with};
use serde_json::{Value, json};

use crate::assistant::sse_events;

fn provider(name: &str, base_url: String, models: &[&str]) -> ProviderEntry {
    ProviderEntry {
        name: name.into(),
        kind: "openai".into(),
        base_url,
        api_key: Some("sk-test-secret".into()),
        api_key_env: None,
        models: models.iter().map(|m| (*m).to_owned()).collect(),
    }
}

pub(crate) fn through(fake: &FakeLlm, config: &mut Config) {
    config.llm.allow_private_addresses = vec![fake.address().to_string(), "127.0.0.1".into()];
    config.llm.tenant_allow_private_addresses = vec!["127.0.0.1".into()];
    config.llm.providers = vec![provider(
        "fake",
        fake.base_url(),
        &["fake-echo", "fake-chunked", "fake-500"],
    )];
    config.llm.default_model = "fake-echo".into();
    // No extraction call after each turn: these tests count upstream calls
    // and usage records (the recall tests cover model extraction).
    config.memory.extraction = "rules".into();
    config.llm.aliases.insert("fast".into(), "fake-echo".into());
    config.llm.retry_base_delay_ms = 5;
    config.llm.retry_max_delay_ms = 20;
}

async fn start(app: &TestApp, token: &str, body: Value) -> String {
    app.post("/v1/conversations", token, body)
        .await
        .expect(201)
        .str("id")
        .to_owned()
}

async fn turns_send_the_persona_and_history_and_meter_what_the_upstream_reports(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let persona = app
        .post(
            "/v1/personas",
            token,
            json!({"name": "Pirate", "system_prompt": "Talk like a pirate.", "temperature": 0.5}),
        )
        .await;
    let persona = persona.expect(201).str("id").to_owned();
    let chat = start(&app, token, json!({"persona_id": persona})).await;
    let url = format!("/v1/conversations/{chat}/messages");
    let first = app.post(&url, token, json!({"content": "ahoy"})).await;
    first.expect(200);
    assert_eq!(first.body["message"]["content"], echo_text("ahoy"));
    assert_eq!(first.body["usage"]["counted_locally"], false);
    let second = app
        .post(&url, token, json!({"content": "again", "model": "fast"}))
        .await;
    second.expect(200);
    let sent = fake.last_request().unwrap();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["system", "user", "assistant", "user"]);
    assert_eq!(sent["messages"][0]["content"], "Talk like a pirate.");
    assert_eq!(
        sent["model"], "fake-echo",
        "the alias resolves to the upstream model"
    );
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(
        fake.last_header("authorization").as_deref(),
        Some("Bearer sk-test-secret")
    );
    let usage = app.get("/v1/usage", token).await;
    assert_eq!(usage.expect(200).body["totals"]["calls"], 2);
    assert_eq!(usage.body["items"][0]["provider"], "fake");
    assert_eq!(usage.body["items"][0]["counted_locally"], false);
    // Usage (and price) names the model actually called, not the alias asked for.
    assert_eq!(usage.body["items"][1]["model"], "fake-echo");
    // The credential never shows in any answer.
    assert!(!usage.text.contains("sk-test-secret") && !first.text.contains("sk-test-secret"));
    app.stop().await;
}

async fn streamed_turns_arrive_in_pieces_and_are_stored_whole(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let chat = start(&app, token, json!({})).await;
    let reply = app
        .post(
            &format!("/v1/conversations/{chat}/messages"),
            token,
            json!({"content": "stream me", "stream": true, "model": "fake-chunked"}),
        )
        .await;
    reply.expect(200);
    let events = sse_events(&reply.text);
    let deltas: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| d["content"].as_str().unwrap())
        .collect();
    assert!(deltas.len() >= 3, "{events:?}");
    assert_eq!(deltas.concat(), echo_text("stream me"));
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done");
    assert_eq!(done["usage"]["counted_locally"], false);
    let stored = app
        .get(&format!("/v1/conversations/{chat}/messages"), token)
        .await;
    assert_eq!(
        stored.expect(200).body["items"][1]["content"],
        echo_text("stream me")
    );
    assert_eq!(fake.streams_completed(), 1);
    app.stop().await;
}

async fn a_client_leaving_mid_stream_cancels_the_upstream_and_keeps_the_partial_answer(
    backend: Backend,
) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let chat = start(&app, &acme.owner_token, json!({})).await;
    fake.push(Behaviour::Chunked {
        chunks: 200,
        interval: Duration::from_millis(50),
    });
    let response = app
        .http
        .post(format!("{}/v1/conversations/{chat}/messages", app.base_url))
        .bearer_auth(&acme.owner_token)
        .json(&json!({"content": "a long answer please", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("delta"));
    drop(body);
    assert!(
        fake.wait_for_cancelled_stream(Duration::from_secs(10))
            .await,
        "the upstream request was not cancelled"
    );
    // The answer so far is stored, marked interrupted, and metered as such.
    let mut stored = Value::Null;
    for _ in 0..100 {
        let messages = app
            .get(
                &format!("/v1/conversations/{chat}/messages"),
                &acme.owner_token,
            )
            .await;
        stored = messages.body["items"][1].clone();
        if !stored.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored["status"], "interrupted", "{stored}");
    assert!(echo_text("a long answer please").starts_with(stored["content"].as_str().unwrap()));
    let usage = app.get("/v1/usage", &acme.owner_token).await;
    assert_eq!(usage.body["items"][0]["status"], "interrupted");
    app.stop().await;
}

async fn upstream_failures_fall_back_or_end_in_a_clear_problem(backend: Backend) {
    let fake = FakeLlm::start().await;
    let dead = refused_base_url().await;
    let Some(app) = spawn_with(backend, |c| {
        through(&fake, c);
        // A provider that refuses connections comes first: the fake answers instead.
        c.llm
            .providers
            .insert(0, provider("dead", dead.clone(), &["fake-echo"]));
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let chat = start(&app, token, json!({})).await;
    let url = format!("/v1/conversations/{chat}/messages");
    let fell_back = app.post(&url, token, json!({"content": "hello"})).await;
    assert_eq!(
        fell_back.expect(200).body["message"]["content"],
        echo_text("hello")
    );
    // Streamed, too; both are metered against the provider that answered, not the chain.
    let streamed = app
        .post(&url, token, json!({"content": "again", "stream": true}))
        .await;
    assert_eq!(
        sse_events(&streamed.expect(200).text).last().unwrap().0,
        "done"
    );
    let served = app.get("/v1/usage?model=fake-echo", token).await;
    let served = served.expect(200).body["items"].as_array().unwrap().clone();
    assert_eq!(served.len(), 2);
    assert!(served.iter().all(|u| u["provider"] == "fake"), "{served:?}");
    // Only the fake serves fake-500: after retries the client gets 502, and the
    // turn is on record (the user's message, a failed answer, an error usage record).
    let failed = app
        .post(&url, token, json!({"content": "boom", "model": "fake-500"}))
        .await;
    failed.expect_problem(502, "upstream_error");
    assert!(!failed.text.contains("sk-test-secret"));
    let messages = app.get(&url, token).await;
    let items = messages.expect(200).body["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(items.len(), 6);
    assert_eq!(items[4]["content"], "boom");
    assert_eq!(items[5]["status"], "failed");
    let usage = app.get("/v1/usage?model=fake-500", token).await;
    assert_eq!(usage.expect(200).body["items"][0]["status"], "error");
    app.stop().await;
}

on_both_backends!(
    turns_send_the_persona_and_history_and_meter_what_the_upstream_reports,
    streamed_turns_arrive_in_pieces_and_are_stored_whole,
    a_client_leaving_mid_stream_cancels_the_upstream_and_keeps_the_partial_answer,
    upstream_failures_fall_back_or_end_in_a_clear_problem,
);
