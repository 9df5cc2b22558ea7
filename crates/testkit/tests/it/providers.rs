//! A tenant's own model providers and aliases: used ahead of the platform's,
//! credentials write-only, URLs held to the outbound (SSRF) policy, and
//! invisible to other tenants.

use karen_testkit::fake_llm::{FakeLlm, echo_text};
use karen_testkit::{Backend, spawn_with};
use serde_json::json;

use crate::assistant_upstream::through;

fn ask(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

async fn a_tenant_brings_its_own_provider_and_aliases(backend: Backend) {
    let platform = FakeLlm::start().await;
    let own = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&platform, c)).await else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let bravo = app.create_tenant("bravo").await;
    let owner = alpha.owner_token.as_str();
    let created = app
        .post(
            "/v1/providers",
            owner,
            json!({"name": "own", "kind": "openai", "base_url": own.base_url(),
            "api_key": "sk-alpha-secret", "models": ["team-model", "fake-echo"]}),
        )
        .await;
    created.expect(201);
    assert_eq!(created.body["has_api_key"], true);
    assert!(!created.text.contains("sk-alpha-secret"));
    let id = created.str("id").to_owned();

    // The tenant's model, with the tenant's credential, at the tenant's provider.
    let reply = app
        .post("/v1/chat/completions", owner, ask("team-model"))
        .await;
    assert_eq!(
        reply.expect(200).body["choices"][0]["message"]["content"],
        echo_text("hello")
    );
    assert_eq!(
        own.last_header("authorization").as_deref(),
        Some("Bearer sk-alpha-secret")
    );
    // A model both serve goes to the tenant's provider first.
    let before = platform.requests();
    app.post("/v1/chat/completions", owner, ask("fake-echo"))
        .await
        .expect(200);
    assert_eq!(
        platform.requests(),
        before,
        "alpha's own provider comes first"
    );
    // Bravo neither sees nor uses alpha's provider.
    let refused = app
        .post(
            "/v1/chat/completions",
            &bravo.owner_token,
            ask("team-model"),
        )
        .await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.body["error"]["code"], "model_not_found");
    app.post("/v1/chat/completions", &bravo.owner_token, ask("fake-echo"))
        .await
        .expect(200);
    assert_eq!(
        platform.requests(),
        before + 1,
        "bravo uses the platform's provider"
    );
    let models = app.get("/v1/models", &bravo.owner_token).await;
    assert!(!models.expect(200).text.contains("team-model"));

    // Aliases.
    let alias = app
        .put(
            "/v1/model-aliases/team",
            owner,
            json!({"target": "team-model"}),
        )
        .await;
    assert_eq!(alias.expect(200).str("target"), "team-model");
    app.post("/v1/chat/completions", owner, ask("team"))
        .await
        .expect(200);
    assert_eq!(own.last_request().unwrap()["model"], "team-model");
    app.put(
        "/v1/model-aliases/bad",
        owner,
        json!({"target": "nobody-serves-this"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(
        app.post("/v1/chat/completions", &bravo.owner_token, ask("team"))
            .await
            .status,
        404
    );
    app.delete("/v1/model-aliases/team", owner)
        .await
        .expect(204);
    app.delete("/v1/model-aliases/team", owner)
        .await
        .expect_problem(404, "not_found");

    // The credential can be removed, never read.
    let listed = app.get("/v1/providers", owner).await;
    assert!(!listed.expect(200).text.contains("sk-alpha-secret"));
    let cleared = app
        .patch(
            &format!("/v1/providers/{id}"),
            owner,
            json!({"api_key": null}),
        )
        .await;
    assert_eq!(cleared.expect(200).body["has_api_key"], false);
    app.delete(&format!("/v1/providers/{id}"), owner)
        .await
        .expect(204);
    assert_eq!(
        app.post("/v1/chat/completions", owner, ask("team-model"))
            .await
            .status,
        404
    );
    app.stop().await;
}

async fn provider_urls_must_pass_the_outbound_policy(backend: Backend) {
    let Some(app) = spawn_with(backend, |_| {}).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let owner = acme.owner_token.as_str();
    for (url, words) in [
        ("http://169.254.169.254/v1", "link-local"),
        ("http://10.1.2.3/v1", "private"),
        ("http://127.0.0.1:11434/v1", "loopback"),
        ("http://localhost:8080/v1", "localhost"),
        ("ftp://example.com/v1", "http"),
        ("https://user:pw@example.com/v1", "credentials"),
    ] {
        let reply = app
            .post(
                "/v1/providers",
                owner,
                json!({"name": "probe", "base_url": url, "models": ["m"]}),
            )
            .await;
        reply.expect_problem(422, "validation_failed");
        assert_eq!(reply.body["field"], "base_url", "{url}: {}", reply.text);
        assert!(
            reply.str("detail").to_lowercase().contains(words),
            "{url}: {}",
            reply.text
        );
    }
    let (_, member) = app.create_user(&acme, "m@acme.test", &["member"]).await;
    app.post(
        "/v1/providers",
        &member,
        json!({"name": "x", "base_url": "https://api.example.com/v1", "models": ["m"]}),
    )
    .await
    .expect_problem(403, "permission_denied");
    app.get("/v1/providers", &member).await.expect(200);
    app.post("/v1/providers", owner, json!({"name": "claude", "kind": "anthropic", "base_url": "https://api.anthropic.com", "models": ["claude-x"]}))
        .await
        .expect_problem(422, "validation_failed");
    app.stop().await;
}

on_both_backends!(
    a_tenant_brings_its_own_provider_and_aliases,
    provider_urls_must_pass_the_outbound_policy
);

async fn tenant_providers_do_not_inherit_the_platform_allowlist(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| {
        through(&fake, c);
        // The operator lets the platform reach the fake, not tenants.
        c.llm.tenant_allow_private_addresses.clear();
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let reply = app
        .post(
            "/v1/providers",
            &acme.owner_token,
            json!({"name": "inside", "base_url": fake.base_url(), "models": ["m"]}),
        )
        .await;
    reply.expect_problem(422, "validation_failed");
    assert_eq!(reply.body["field"], "base_url");
    // The platform's own provider at the same address still works.
    app.post("/v1/chat/completions", &acme.owner_token, ask("fake-echo"))
        .await
        .expect(200);
    app.stop().await;
}

on_both_backends!(tenant_providers_do_not_inherit_the_platform_allowlist);

async fn route_changes_reach_every_replica_at_once(backend: Backend) {
    let platform = FakeLlm::start().await;
    let own = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&platform, c)).await else {
        return;
    };
    let replica = match backend {
        Backend::Postgres => Some(app.replica().await),
        Backend::Sqlite => None,
    };
    let other = replica.as_ref().unwrap_or(&app);
    let alpha = app.create_tenant("alpha").await;
    let owner = alpha.owner_token.as_str();
    let created = app
        .post(
            "/v1/providers",
            owner,
            json!({"name": "own", "kind": "openai", "base_url": own.base_url(),
            "models": ["team-model"]}),
        )
        .await;
    let id = created.expect(201).str("id").to_owned();
    app.put(
        "/v1/model-aliases/team",
        owner,
        json!({"target": "team-model"}),
    )
    .await
    .expect(200);
    for _ in 0..2 {
        other
            .post("/v1/chat/completions", owner, ask("team"))
            .await
            .expect(200);
    }
    assert_eq!(own.requests(), 2);
    // Retargeted on one replica, the alias moves on the other at once.
    app.put(
        "/v1/model-aliases/team",
        owner,
        json!({"target": "fake-echo"}),
    )
    .await
    .expect(200);
    let before = platform.requests();
    other
        .post("/v1/chat/completions", owner, ask("team"))
        .await
        .expect(200);
    assert_eq!((own.requests(), platform.requests()), (2, before + 1));
    app.delete("/v1/model-aliases/team", owner)
        .await
        .expect(204);
    let gone = other.post("/v1/chat/completions", owner, ask("team")).await;
    assert_eq!(gone.status, 404, "{}", gone.text);
    // A deleted provider serves nothing more, anywhere.
    other
        .post("/v1/chat/completions", owner, ask("team-model"))
        .await
        .expect(200);
    app.delete(&format!("/v1/providers/{id}"), owner)
        .await
        .expect(204);
    let gone = other
        .post("/v1/chat/completions", owner, ask("team-model"))
        .await;
    assert_eq!(
        gone.body["error"]["code"], "model_not_found",
        "{}",
        gone.text
    );
    if let Some(replica) = replica {
        replica.stop().await;
    }
    app.stop().await;
}

on_both_backends!(route_changes_reach_every_replica_at_once);
