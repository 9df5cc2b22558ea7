//! The OpenAI-compatible `POST /v1/embeddings`: OpenAI's request and answer
//! shapes (float and base64 vectors, input order), the tenant's embedding
//! cache (a repeated input never reaches the provider again), metering and
//! budgets, refusals in OpenAI's error shape, the `embeddings:create`
//! permission, and tenants' own embedding providers, invisible to others.

use base64::Engine as _;
use karen::config::{Config, PriceEntry};
use karen::indexes::EmbeddingSection;
use karen_testkit::fake_llm::{FakeLlm, fake_embedding, fake_token_count};
use karen_testkit::{Backend, Reply, TestApp, spawn_with};
use serde_json::{Value, json};

use crate::assistant_upstream::through;

/// The platform offers the fake upstream's embeddings as `fake-embed` and
/// `text-embedding-3-small` (next to the built-in default), priced.
fn with_remote_embedders(fake: &FakeLlm, config: &mut Config) {
    through(fake, config);
    for model in ["fake-embed", "text-embedding-3-small"] {
        config.memory.embedders.push(EmbeddingSection {
            kind: "openai".into(),
            model: model.into(),
            base_url: Some(fake.base_url()),
            ..EmbeddingSection::default()
        });
    }
    config.llm.prices.push(PriceEntry {
        model: "fake-embed".into(),
        prompt_per_1k_micros: 2000,
        completion_per_1k_micros: 0,
    });
}

fn vectors(reply: &Reply) -> Vec<Vec<f32>> {
    reply.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            match &item["embedding"] {
                Value::Array(numbers) => {
                    numbers.iter().map(|n| n.as_f64().unwrap() as f32).collect()
                }
                Value::String(encoded) => base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                other => panic!("not an embedding: {other}"),
            }
        })
        .collect()
}

async fn usage_items(app: &TestApp, token: &str) -> Vec<Value> {
    let usage = app.get("/v1/usage", token).await;
    usage.expect(200).body["items"].as_array().unwrap().clone()
}

async fn embeddings_follow_openais_shape_and_are_cached_and_metered(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| with_remote_embedders(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (key_id, key) = app
        .create_api_key(
            &acme.owner_token,
            json!({"name": "rag", "scopes": ["embeddings:create"]}),
        )
        .await;
    let texts = [
        "the cat sat on the mat",
        "a second text",
        "the cat sat on the mat",
    ];

    // Floats, in input order; a repeated input is embedded once.
    let reply = app
        .post(
            "/v1/embeddings",
            &key,
            json!({"model": "fake-embed", "input": texts, "user": "ignored"}),
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.body["object"], "list");
    assert_eq!(reply.body["model"], "fake-embed");
    let expected: Vec<Vec<f32>> = texts.iter().map(|t| fake_embedding(t)).collect();
    assert_eq!(vectors(&reply), expected);
    let tokens = fake_token_count(texts[0]) + fake_token_count(texts[1]);
    assert_eq!(reply.body["usage"]["prompt_tokens"], tokens);
    assert_eq!(reply.body["usage"]["total_tokens"], tokens);
    assert_eq!(fake.requests(), 1);
    assert_eq!(
        fake.last_request().unwrap()["input"],
        json!([texts[0], texts[1]])
    );

    // One usage record for the one provider call, with the key, the
    // provider's token count and the price table's cost.
    let records = usage_items(&app, &acme.owner_token).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["model"], "fake-embed");
    assert_eq!(record["provider"], "embeddings-openai");
    assert_eq!(record["api_key_id"], json!(key_id));
    assert_eq!(record["prompt_tokens"], tokens);
    assert_eq!(record["completion_tokens"], 0);
    assert_eq!(record["counted_locally"], false);
    assert_eq!(record["status"], "ok");
    assert_eq!(record["cost_micros"], i64::from(tokens) * 2);

    // Base64 (what the SDKs ask for): the same vectors, from the cache.
    let reply = app
        .post(
            "/v1/embeddings",
            &key,
            json!({"model": "fake-embed", "input": [texts[1], texts[0]], "encoding_format": "base64"}),
        )
        .await;
    reply.expect(200);
    assert!(reply.body["data"][0]["embedding"].is_string());
    assert_eq!(
        vectors(&reply),
        vec![expected[1].clone(), expected[0].clone()]
    );
    assert_eq!(
        reply.body["usage"]["prompt_tokens"], 0,
        "cached inputs are free"
    );
    assert_eq!(fake.requests(), 1, "cached inputs never reach the provider");
    assert_eq!(usage_items(&app, &acme.owner_token).await.len(), 1);

    // A single string; only the new input goes upstream.
    let reply = app
        .post(
            "/v1/embeddings",
            &key,
            json!({"model": "fake-embed", "input": "something new"}),
        )
        .await;
    assert_eq!(
        vectors(reply.expect(200)),
        vec![fake_embedding("something new")]
    );
    assert_eq!(fake.requests(), 2);

    // The built-in model answers with no provider at all.
    let reply = app
        .post(
            "/v1/embeddings",
            &key,
            json!({"model": "karen-offline-hash-384", "input": ["hello world", "hello world"]}),
        )
        .await;
    let built_in = vectors(reply.expect(200));
    assert_eq!(built_in.len(), 2);
    assert_eq!(built_in[0].len(), 384);
    assert_eq!(built_in[0], built_in[1]);
    let records = usage_items(&app, &acme.owner_token).await;
    let local = records
        .iter()
        .find(|r| r["model"] == "karen-offline-hash-384")
        .unwrap();
    assert_eq!(local["counted_locally"], true);

    // dimensions: text-embedding-3 vectors are cut and renormalised; other
    // models only accept their own length.
    let reply = app
        .post(
            "/v1/embeddings",
            &key,
            json!({"model": "text-embedding-3-small", "input": "shorter", "dimensions": 4}),
        )
        .await;
    let short = vectors(reply.expect(200)).remove(0);
    let full = fake_embedding("shorter");
    let norm = full[..4].iter().map(|x| x * x).sum::<f32>().sqrt();
    let expected: Vec<f32> = full[..4].iter().map(|x| x / norm).collect();
    assert_eq!(short.len(), 4);
    for (got, want) in short.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-6, "{short:?} {expected:?}");
    }
    app.post(
        "/v1/embeddings",
        &key,
        json!({"model": "karen-offline-hash-384", "input": "hello world", "dimensions": 384}),
    )
    .await
    .expect(200);
    let refused = app
        .post(
            "/v1/embeddings",
            &key,
            json!({"model": "karen-offline-hash-384", "input": "hello world", "dimensions": 8}),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.body["error"]["param"], "dimensions");

    // The key lists only what it may use: embedding models, no chat models.
    let models = app.get("/v1/models", &key).await;
    let ids: Vec<String> = models.expect(200).body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        [
            "karen-offline-hash-384",
            "fake-embed",
            "text-embedding-3-small"
        ],
        "{ids:?}"
    );
    let owner_models = app.get("/v1/models", &acme.owner_token).await;
    let text = &owner_models.expect(200).text;
    assert!(
        text.contains("fake-echo") && text.contains("fake-embed"),
        "{text}"
    );
    app.stop().await;
}

fn expect_openai_error(reply: &Reply, status: u16, code: &str, param: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let error = &reply.body["error"];
    assert_eq!(error["code"], code, "{}", reply.text);
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    match param {
        Some(param) => assert_eq!(error["param"], param, "{}", reply.text),
        None => assert!(error.get("param").is_some()),
    }
}

async fn bad_requests_get_openais_error_shape(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| with_remote_embedders(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let model = "fake-embed";
    let too_many: Vec<String> = (0..2049).map(|i| format!("text {i}")).collect();
    let too_long = "word ".repeat(9000);
    let cases = [
        (json!({"model": model, "input": ""}), "input[0]"),
        (json!({"model": model, "input": []}), "input"),
        (json!({"model": model, "input": ["fine", "  "]}), "input[1]"),
        (json!({"model": model, "input": too_many}), "input"),
        (
            json!({"model": model, "input": ["fine", too_long]}),
            "input[1]",
        ),
        (json!({"model": model, "input": 42}), "input"),
        (
            json!({"model": model, "input": ["fine", {"text": "no"}]}),
            "input[1]",
        ),
        (json!({"model": model, "input": [1, 2, 3]}), "input"),
        (json!({"model": model, "input": [[1, 2], [3]]}), "input"),
        (json!({"model": model}), "input"),
        (json!({"input": "hello"}), "model"),
        (json!({"model": 7, "input": "hello"}), "model"),
        (
            json!({"model": model, "input": "hello", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": model, "input": "hello", "dimensions": 0}),
            "dimensions",
        ),
        (
            json!({"model": model, "input": "hello", "dimensions": "4"}),
            "dimensions",
        ),
    ];
    for (body, param) in cases {
        let reply = app.post("/v1/embeddings", token, body.clone()).await;
        expect_openai_error(&reply, 400, "validation_failed", Some(param));
        assert_eq!(reply.body["error"]["type"], "invalid_request_error");
    }
    let tokens = app
        .post(
            "/v1/embeddings",
            token,
            json!({"model": model, "input": [1, 2]}),
        )
        .await;
    assert!(
        tokens.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token arrays are not supported")
    );
    // Not JSON at all.
    let request = app
        .http
        .post(format!("{}/v1/embeddings", app.base_url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{not json");
    let reply = request.send().await.unwrap();
    assert_eq!(reply.status(), 400);
    // An unknown model: 404 model_not_found, as OpenAI says it.
    let unknown = app
        .post(
            "/v1/embeddings",
            token,
            json!({"model": "no-such-model", "input": "hello"}),
        )
        .await;
    expect_openai_error(&unknown, 404, "model_not_found", Some("model"));
    assert_eq!(unknown.body["error"]["type"], "invalid_request_error");
    assert_eq!(fake.requests(), 0, "nothing reached the provider");
    assert!(usage_items(&app, token).await.is_empty());
    app.stop().await;
}

async fn embeddings_need_a_credential_with_embeddings_create(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| with_remote_embedders(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let body = json!({"model": "fake-embed", "input": "hello"});
    let anonymous = app
        .call("POST", "/v1/embeddings", None, Some(body.clone()))
        .await;
    expect_openai_error(&anonymous, 401, "unauthenticated", None);
    assert_eq!(anonymous.body["error"]["type"], "authentication_error");
    // A chat-only key, and a viewer: 403 naming the permission.
    let (_, chat_key) = app
        .create_api_key(
            &acme.owner_token,
            json!({"name": "chat", "scopes": ["chat:write"]}),
        )
        .await;
    let (_, viewer) = app
        .create_user(&acme, "viewer@acme.test", &["viewer"])
        .await;
    for credential in [chat_key.as_str(), viewer.as_str()] {
        let denied = app.post("/v1/embeddings", credential, body.clone()).await;
        expect_openai_error(&denied, 403, "permission_denied", None);
        assert_eq!(denied.body["error"]["type"], "permission_error");
        assert!(
            denied.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("embeddings:create")
        );
    }
    // The chat-only key lists chat models and no embedding model; the viewer nothing.
    let models = app.get("/v1/models", &chat_key).await;
    let text = &models.expect(200).text;
    assert!(
        text.contains("fake-echo") && !text.contains("fake-embed"),
        "{text}"
    );
    let refused = app.get("/v1/models", &viewer).await;
    expect_openai_error(&refused, 403, "permission_denied", None);
    // Members hold the permission; keys made without scopes carry it.
    let (_, member) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;
    app.post("/v1/embeddings", &member, body.clone())
        .await
        .expect(200);
    let (_, default_key) = app
        .create_api_key(&member, json!({"name": "everything"}))
        .await;
    app.post("/v1/embeddings", &default_key, body)
        .await
        .expect(200);
    assert_eq!(fake.requests(), 1, "the second call came from the cache");
    app.stop().await;
}

async fn a_spent_budget_refuses_before_the_provider(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| with_remote_embedders(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    app.post(
        "/v1/budgets",
        token,
        json!({"scope": "tenant", "metric": "tokens", "period": "day", "limit": 10, "enforcement": "hard"}),
    )
    .await
    .expect(201);
    // Six words (the provider's count; Karen's estimate before the call is 7).
    let six = "one two three four five six";
    app.post(
        "/v1/embeddings",
        token,
        json!({"model": "fake-embed", "input": six}),
    )
    .await
    .expect(200);
    assert_eq!(fake.requests(), 1);
    let refused = app
        .post(
            "/v1/embeddings",
            token,
            json!({"model": "fake-embed", "input": "anything more than that"}),
        )
        .await;
    // 6 used + about 6 estimated for this input > 10.
    expect_openai_error(&refused, 429, "budget_exceeded", None);
    assert_eq!(refused.body["error"]["type"], "rate_limit_error");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(fake.requests(), 1, "nothing was sent upstream");
    assert_eq!(usage_items(&app, token).await.len(), 1);
    // What is cached costs nothing, so it is still served.
    app.post(
        "/v1/embeddings",
        token,
        json!({"model": "fake-embed", "input": six}),
    )
    .await
    .expect(200);
    assert_eq!(fake.requests(), 1);
    app.stop().await;
}

async fn tenants_embed_through_their_own_providers_and_caches(backend: Backend) {
    let platform = FakeLlm::start().await;
    let own = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| with_remote_embedders(&platform, c)).await else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let bravo = app.create_tenant("bravo").await;
    // Alpha brings its own OpenAI-compatible provider serving "team-embed".
    app.post(
        "/v1/providers",
        &alpha.owner_token,
        json!({"name": "own", "base_url": own.base_url(), "api_key": "sk-alpha-embed",
            "models": ["team-embed"]}),
    )
    .await
    .expect(201);
    let (_, alpha_key) = app
        .create_api_key(
            &alpha.owner_token,
            json!({"name": "alpha", "scopes": ["embeddings:create"]}),
        )
        .await;
    let (_, bravo_key) = app
        .create_api_key(
            &bravo.owner_token,
            json!({"name": "bravo", "scopes": ["embeddings:create"]}),
        )
        .await;
    let reply = app
        .post(
            "/v1/embeddings",
            &alpha_key,
            json!({"model": "team-embed", "input": "alpha text"}),
        )
        .await;
    assert_eq!(
        vectors(reply.expect(200)),
        vec![fake_embedding("alpha text")]
    );
    assert_eq!(own.requests(), 1);
    assert_eq!(
        own.last_header("authorization").as_deref(),
        Some("Bearer sk-alpha-embed")
    );
    assert_eq!(own.last_request().unwrap()["model"], "team-embed");
    let alpha_models = app.get("/v1/models", &alpha_key).await;
    assert!(alpha_models.expect(200).text.contains("team-embed"));
    let records = usage_items(&app, &alpha.owner_token).await;
    assert_eq!(records[0]["provider"], "tenant:own");

    // Bravo can neither see nor use alpha's provider or model.
    let refused = app
        .post(
            "/v1/embeddings",
            &bravo_key,
            json!({"model": "team-embed", "input": "alpha text"}),
        )
        .await;
    expect_openai_error(&refused, 404, "model_not_found", Some("model"));
    let bravo_models = app.get("/v1/models", &bravo_key).await;
    assert!(!bravo_models.expect(200).text.contains("team-embed"));
    assert_eq!(own.requests(), 1);

    // The cache is per tenant: the same input and model embedded by alpha
    // is embedded again for bravo, and each sees only its own usage.
    for key in [alpha_key.as_str(), bravo_key.as_str(), alpha_key.as_str()] {
        app.post(
            "/v1/embeddings",
            key,
            json!({"model": "fake-embed", "input": "the same words"}),
        )
        .await
        .expect(200);
    }
    assert_eq!(
        platform.requests(),
        2,
        "one call per tenant; alpha's second came from alpha's cache"
    );
    let bravo_records = usage_items(&app, &bravo.owner_token).await;
    assert_eq!(bravo_records.len(), 1, "{bravo_records:?}");
    assert_eq!(bravo_records[0]["model"], "fake-embed");
    assert_eq!(usage_items(&app, &alpha.owner_token).await.len(), 2);
    // A model served by alpha's provider keeps its own cache: the platform's
    // vectors under another name never answer for it.
    app.post(
        "/v1/embeddings",
        &alpha_key,
        json!({"model": "team-embed", "input": "the same words"}),
    )
    .await
    .expect(200);
    assert_eq!(own.requests(), 2);
    app.stop().await;
}

on_both_backends!(
    embeddings_follow_openais_shape_and_are_cached_and_metered,
    bad_requests_get_openais_error_shape,
    embeddings_need_a_credential_with_embeddings_create,
    a_spent_budget_refuses_before_the_provider,
    tenants_embed_through_their_own_providers_and_caches,
);
