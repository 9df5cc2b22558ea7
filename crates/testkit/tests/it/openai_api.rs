//! The OpenAI-compatible API: request and response shapes as the official
//! SDKs expect them, streaming chunks, tools passed through, errors in
//! OpenAI's shape, and metering per API key.

use karen_testkit::fake_llm::{FakeLlm, echo_text};
use karen_testkit::{Backend, spawn_with};
use serde_json::{Value, json};

use crate::assistant_upstream::through;

fn data_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|l| l.trim().to_owned())
        .collect()
}

async fn completions_answer_in_openai_shape_and_are_metered_per_key(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (key_id, key) = app
        .create_api_key(
            &acme.owner_token,
            json!({"name": "app", "scopes": ["chat:write"]}),
        )
        .await;
    let body = json!({
        "model": "fast",
        "messages": [
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 50
    });
    let reply = app.post("/v1/chat/completions", &key, body).await;
    reply.expect(200);
    assert_eq!(reply.body["object"], "chat.completion");
    assert!(reply.str("id").starts_with("chatcmpl-"));
    assert_eq!(reply.body["model"], "fast");
    assert_eq!(reply.body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        reply.body["choices"][0]["message"]["content"],
        echo_text("hi there")
    );
    assert_eq!(reply.body["choices"][0]["finish_reason"], "stop");
    let usage = &reply.body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
    let sent = fake.last_request().unwrap();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["max_tokens"], 50);
    let metered = app.get("/v1/usage", &acme.owner_token).await;
    let record = &metered.expect(200).body["items"][0];
    assert_eq!(record["api_key_id"], json!(key_id));
    assert!(record["conversation_id"].is_null());
    let models = app.get("/v1/models", &key).await;
    assert_eq!(models.expect(200).body["object"], "list");
    let ids: Vec<&str> = models.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"fast")
            && ids.contains(&"fake-echo")
            && ids.contains(&"karen-offline-extractive"),
        "{ids:?}"
    );
    app.stop().await;
}

async fn streamed_completions_are_chat_completion_chunks_ending_in_done(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let body = json!({"model": "fake-chunked", "messages": [{"role": "user", "content": "stream this"}],
        "stream": true, "stream_options": {"include_usage": true}});
    let reply = app
        .post("/v1/chat/completions", &acme.owner_token, body)
        .await;
    reply.expect(200);
    let lines = data_lines(&reply.text);
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"])
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, echo_text("stream this"));
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    app.stop().await;
}

async fn tools_pass_through_and_tool_calls_come_back(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| {
        through(&fake, c);
        c.llm.providers[0].models.push("fake-tool".into());
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}}}}}]);
    let body = json!({"model": "fake-tool", "messages": [{"role": "user", "content": "weather?"}], "tools": tools,
        "tool_choice": "auto"});
    let reply = app
        .post("/v1/chat/completions", &acme.owner_token, body.clone())
        .await;
    reply.expect(200);
    assert_eq!(fake.last_request().unwrap()["tools"], tools);
    assert_eq!(fake.last_request().unwrap()["tool_choice"], "auto");
    let call = &reply.body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(reply.body["choices"][0]["finish_reason"], "tool_calls");
    // Streamed: the arguments arrive in pieces under the same index.
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let reply = app
        .post("/v1/chat/completions", &acme.owner_token, streamed)
        .await;
    let arguments: String = data_lines(&reply.expect(200).text)
        .iter()
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(arguments, r#"{"city":"Paris"}"#);
    // The assistant's tool call and the tool's answer can be sent back.
    let follow_up = json!({"model": "fake-echo", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
        {"role": "user", "content": "thanks"}]});
    app.post("/v1/chat/completions", &acme.owner_token, follow_up)
        .await
        .expect(200);
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(sent["messages"][2]["tool_call_id"], call["id"]);
    app.stop().await;
}

async fn errors_use_openais_shape(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let user = |text: &str| json!([{"role": "user", "content": text}]);
    let cases = [
        (
            None,
            json!({"model": "fake-echo", "messages": user("hi")}),
            401,
            "authentication_error",
            "unauthenticated",
        ),
        (
            Some(token),
            json!({"model": "nope", "messages": user("hi")}),
            404,
            "invalid_request_error",
            "model_not_found",
        ),
        (
            Some(token),
            json!({"model": "fake-echo", "messages": user("hi"), "n": 2}),
            400,
            "invalid_request_error",
            "validation_failed",
        ),
        (
            Some(token),
            json!({"model": "fake-echo", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            400,
            "invalid_request_error",
            "validation_failed",
        ),
        (
            Some(token),
            json!({"model": "fake-echo", "messages": []}),
            400,
            "invalid_request_error",
            "validation_failed",
        ),
        (
            Some(token),
            json!({"model": "fake-500", "messages": user("hi")}),
            502,
            "api_error",
            "upstream_error",
        ),
        (
            Some(token),
            json!({"messages": user("hi")}),
            400,
            "invalid_request_error",
            "validation_failed",
        ),
    ];
    for (credential, body, status, kind, code) in cases {
        let reply = app
            .call(
                "POST",
                "/v1/chat/completions",
                credential,
                Some(body.clone()),
            )
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{}",
            reply.text
        );
        assert_eq!(reply.body["error"]["type"], kind, "{}", reply.text);
        assert_eq!(reply.body["error"]["code"], code, "{}", reply.text);
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let n = app
        .post(
            "/v1/chat/completions",
            token,
            json!({"model": "fake-echo", "messages": user("hi"), "n": 3}),
        )
        .await;
    assert_eq!(n.body["error"]["param"], "n");
    // A viewer may not chat: 403 in OpenAI's shape.
    let (_, viewer) = app
        .create_user(&acme, "viewer@acme.test", &["viewer"])
        .await;
    let denied = app
        .post(
            "/v1/chat/completions",
            &viewer,
            json!({"model": "fake-echo", "messages": user("hi")}),
        )
        .await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body["error"]["type"], "permission_error");
    app.stop().await;
}

on_both_backends!(
    completions_answer_in_openai_shape_and_are_metered_per_key,
    streamed_completions_are_chat_completion_chunks_ending_in_done,
    tools_pass_through_and_tool_calls_come_back,
    errors_use_openais_shape,
);

async fn bad_parameters_and_upstream_refusals_are_client_errors(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let user = json!([{"role": "user", "content": "hi"}]);
    for (field, value) in [("temperature", json!(50)), ("max_tokens", json!(0))] {
        let mut body = json!({"model": "fake-echo", "messages": user});
        body[field] = value;
        let reply = app.post("/v1/chat/completions", token, body).await;
        assert_eq!(reply.status, 400, "{field}: {}", reply.text);
        assert_eq!(reply.body["error"]["param"], field);
    }
    // The provider itself rejects the request (400): the client made the mistake.
    fake.push(karen_testkit::fake_llm::Behaviour::Status(400));
    let reply = app
        .post(
            "/v1/chat/completions",
            token,
            json!({"model": "fake-echo", "messages": user}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rejected the request")
    );
    app.stop().await;
}

on_both_backends!(bad_parameters_and_upstream_refusals_are_client_errors);
