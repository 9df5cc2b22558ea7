//! The assistant API: conversations, personas, chat turns (whole and
//! streamed) and usage metering, on both backends, with the offline provider
//! (no network) and against a fake OpenAI-compatible upstream.

use karen_testkit::{Backend, Reply, TestApp, spawn};
use serde_json::{Value, json};

/// Parses a `text/event-stream` body into (event, data) pairs.
pub(crate) fn sse_events(text: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(rest) = line.strip_prefix("event:") {
                name = rest.trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("data:") {
                data.push_str(rest.trim_start());
            }
        }
        if !data.is_empty() {
            events.push((
                name,
                serde_json::from_str(&data).unwrap_or(Value::String(data)),
            ));
        }
    }
    events
}

async fn conversation(app: &TestApp, token: &str, title: &str) -> String {
    let reply = app
        .post("/v1/conversations", token, json!({"title": title}))
        .await;
    reply.expect(201).str("id").to_owned()
}

async fn send(app: &TestApp, token: &str, conversation: &str, body: Value) -> Reply {
    app.post(
        &format!("/v1/conversations/{conversation}/messages"),
        token,
        body,
    )
    .await
}

async fn conversations_are_listed_newest_first_and_can_be_renamed_and_deleted(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let first = conversation(&app, token, "first").await;
    let second = conversation(&app, token, "second").await;
    let third = conversation(&app, token, "third").await;
    // Activity in the first moves it to the top.
    app.clock.advance(std::time::Duration::from_secs(5));
    send(&app, token, &first, json!({"content": "hello"}))
        .await
        .expect(200);
    let page = app.get("/v1/conversations?limit=2", token).await;
    assert_eq!(
        page.expect(200).item_ids(),
        vec![first.clone(), third.clone()]
    );
    let cursor = page.str("next_cursor").to_owned();
    let rest = app
        .get(&format!("/v1/conversations?limit=2&after={cursor}"), token)
        .await;
    assert_eq!(rest.expect(200).item_ids(), vec![second.clone()]);
    assert!(rest.body["next_cursor"].is_null());
    app.get("/v1/conversations?after=garbage", token)
        .await
        .expect_problem(422, "validation_failed");

    let renamed = app
        .patch(
            &format!("/v1/conversations/{second}"),
            token,
            json!({"title": "renamed"}),
        )
        .await;
    assert_eq!(renamed.expect(200).str("title"), "renamed");
    let cleared = app
        .patch(
            &format!("/v1/conversations/{second}"),
            token,
            json!({"title": null}),
        )
        .await;
    assert!(cleared.expect(200).body["title"].is_null());
    app.delete(&format!("/v1/conversations/{first}"), token)
        .await
        .expect(204);
    app.get(&format!("/v1/conversations/{first}"), token)
        .await
        .expect_problem(404, "not_found");
    app.get(&format!("/v1/conversations/{first}/messages"), token)
        .await
        .expect_problem(404, "not_found");
    app.stop().await;
}

async fn the_offline_assistant_answers_honestly_and_every_turn_is_metered(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let chat = conversation(&app, token, "offline").await;
    let turn = send(
        &app,
        token,
        &chat,
        json!({"content": "What is our refund policy?"}),
    )
    .await;
    turn.expect(200);
    let answer = turn.body["message"]["content"].as_str().unwrap();
    assert!(
        answer.to_lowercase().contains("not a language model"),
        "{answer}"
    );
    assert_eq!(turn.body["message"]["model"], "karen-offline-extractive");
    assert_eq!(turn.body["message"]["status"], "complete");
    assert_eq!(
        turn.body["user_message"]["content"],
        "What is our refund policy?"
    );
    assert_eq!(turn.body["usage"]["counted_locally"], true);
    assert!(turn.body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let messages = app
        .get(&format!("/v1/conversations/{chat}/messages"), token)
        .await;
    let items = messages.expect(200).body["items"]
        .as_array()
        .unwrap()
        .clone();
    let roles: Vec<&str> = items.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, vec!["user", "assistant"]);

    let usage = app.get("/v1/usage", token).await;
    usage.expect(200);
    assert_eq!(usage.body["totals"]["calls"], 1);
    let record = &usage.body["items"][0];
    assert_eq!(record["conversation_id"], json!(chat));
    assert_eq!(record["provider"], "offline");
    assert_eq!(record["status"], "ok");
    assert_eq!(record["user_id"], json!(acme.owner_id));
    let filtered = app.get("/v1/usage?model=gpt-4o", token).await;
    assert_eq!(filtered.expect(200).body["totals"]["calls"], 0);
    app.stop().await;
}

async fn a_streamed_turn_sends_deltas_then_done(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let chat = conversation(&app, token, "stream").await;
    let reply = send(
        &app,
        token,
        &chat,
        json!({"content": "Tell me something", "stream": true}),
    )
    .await;
    reply.expect(200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(&reply.text);
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    let deltas: String = events
        .iter()
        .filter(|(name, _)| name == "delta")
        .map(|(_, data)| data["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(!deltas.is_empty());
    let messages = app
        .get(&format!("/v1/conversations/{chat}/messages"), token)
        .await;
    let stored = &messages.body["items"][1];
    assert_eq!(stored["id"], done["message_id"]);
    assert_eq!(stored["content"].as_str().unwrap(), deltas);
    assert_eq!(stored["status"], "complete");
    app.stop().await;
}

async fn bad_turns_are_refused_before_anything_is_stored(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let chat = conversation(&app, token, "bad").await;
    send(&app, token, &chat, json!({"content": "   "}))
        .await
        .expect_problem(422, "validation_failed");
    send(&app, token, &chat, json!({"content": "x".repeat(32_001)}))
        .await
        .expect_problem(422, "validation_failed");
    let unknown = send(
        &app,
        token,
        &chat,
        json!({"content": "hi", "model": "no-such-model"}),
    )
    .await;
    assert!(
        unknown
            .expect_problem(422, "validation_failed")
            .str("detail")
            .contains("no-such-model")
    );
    send(
        &app,
        token,
        &chat,
        json!({"content": "hi", "temperature": 3}),
    )
    .await
    .expect_problem(422, "validation_failed");
    let messages = app
        .get(&format!("/v1/conversations/{chat}/messages"), token)
        .await;
    let stored = messages.expect(200).body["items"].as_array().unwrap().len();
    // The refused model name is checked before the user's message is stored.
    assert_eq!(stored, 0, "{}", messages.text);
    app.stop().await;
}

async fn conversations_and_personal_personas_are_private_to_their_user(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, alice) = app.create_user(&acme, "alice@acme.test", &["member"]).await;
    let (_, bob) = app.create_user(&acme, "bob@acme.test", &["member"]).await;
    let alices = conversation(&app, &alice, "alice's").await;
    app.get(&format!("/v1/conversations/{alices}"), &bob)
        .await
        .expect_problem(404, "not_found");
    send(&app, &bob, &alices, json!({"content": "hi"}))
        .await
        .expect_problem(404, "not_found");
    assert!(
        app.get("/v1/conversations", &bob)
            .await
            .item_ids()
            .is_empty()
    );
    // Even the owner of the tenant does not read Alice's conversation through this API.
    app.get(&format!("/v1/conversations/{alices}"), &acme.owner_token)
        .await
        .expect_problem(404, "not_found");

    let own = app
        .post(
            "/v1/personas",
            &alice,
            json!({"name": "Alice's tutor", "system_prompt": "Be brief."}),
        )
        .await;
    let own_id = own.expect(201).str("id").to_owned();
    assert_eq!(own.body["shared"], false);
    app.get(&format!("/v1/personas/{own_id}"), &bob)
        .await
        .expect_problem(404, "not_found");
    app.post("/v1/conversations", &bob, json!({"persona_id": own_id}))
        .await
        .expect_problem(422, "validation_failed");
    // Shared personas need tenant:manage to create, and everyone sees them.
    app.post(
        "/v1/personas",
        &alice,
        json!({"name": "Team", "shared": true}),
    )
    .await
    .expect_problem(403, "permission_denied");
    let shared = app
        .post(
            "/v1/personas",
            &acme.owner_token,
            json!({"name": "Team", "system_prompt": "Be kind.", "shared": true}),
        )
        .await;
    let shared_id = shared.expect(201).str("id").to_owned();
    let listed = app.get("/v1/personas", &bob).await;
    let names: Vec<&str> = listed
        .expect(200)
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Team"]);
    app.patch(
        &format!("/v1/personas/{shared_id}"),
        &bob,
        json!({"name": "Mine now"}),
    )
    .await
    .expect_problem(403, "permission_denied");
    app.post(
        "/v1/personas",
        &alice,
        json!({"name": "Hot", "temperature": 5}),
    )
    .await
    .expect_problem(422, "validation_failed");
    app.stop().await;
}

async fn roles_decide_who_chats_and_who_reads_usage(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, viewer) = app
        .create_user(&acme, "viewer@acme.test", &["viewer"])
        .await;
    let (_, analyst) = app
        .create_user(&acme, "analyst@acme.test", &["analyst"])
        .await;
    app.post("/v1/conversations", &viewer, json!({}))
        .await
        .expect_problem(403, "permission_denied");
    app.get("/v1/conversations", &viewer).await.expect(200);
    app.get("/v1/usage", &viewer)
        .await
        .expect_problem(403, "permission_denied");
    app.get("/v1/usage", &analyst).await.expect(200);
    app.get("/v1/conversations", &analyst)
        .await
        .expect_problem(403, "permission_denied");
    app.stop().await;
}

on_both_backends!(
    conversations_are_listed_newest_first_and_can_be_renamed_and_deleted,
    the_offline_assistant_answers_honestly_and_every_turn_is_metered,
    a_streamed_turn_sends_deltas_then_done,
    bad_turns_are_refused_before_anything_is_stored,
    conversations_and_personal_personas_are_private_to_their_user,
    roles_decide_who_chats_and_who_reads_usage,
);
