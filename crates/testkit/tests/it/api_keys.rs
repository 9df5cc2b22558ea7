//! API keys are remembered between calls (the gateway checks one on every
//! request); every change that affects a key reaches every replica at once.

use karen_testkit::{Backend, TestApp, spawn};
use serde_json::{Value, json};

fn permissions(reply: &karen_testkit::Reply) -> Vec<Value> {
    reply.body["permissions"].as_array().unwrap().clone()
}

/// Uses the key a few times on `replica`, so that it is cached there.
async fn warm(replica: &TestApp, key: &str) {
    for _ in 0..3 {
        replica.get("/v1/me", key).await.expect(200);
    }
}

async fn key_changes_reach_every_replica_at_once(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    // Scaled out, a second replica shares the database and Redis; embedded,
    // there is one process.
    let replica = match backend {
        Backend::Postgres => Some(app.replica().await),
        Backend::Sqlite => None,
    };
    let other = replica.as_ref().unwrap_or(&app);
    let acme = app.create_tenant("acme").await;
    let owner = acme.owner_token.as_str();
    let (member, member_token) = app.create_user(&acme, "m@acme.test", &["member"]).await;
    let (key_id, key) = app
        .create_api_key(&member_token, json!({"name": "k"}))
        .await;
    warm(other, &key).await;
    assert!(permissions(&other.get("/v1/me", &key).await).contains(&json!("chat:write")));

    // The owner's roles shrink on one replica: the key shrinks on the other.
    app.put(
        &format!("/v1/users/{member}/roles"),
        owner,
        json!({"roles": ["viewer"]}),
    )
    .await
    .expect(200);
    assert!(!permissions(&other.get("/v1/me", &key).await).contains(&json!("chat:write")));

    // A custom role's permissions change.
    app.post(
        "/v1/roles",
        owner,
        json!({"name": "writer", "permissions": ["chat:write"]}),
    )
    .await
    .expect(201);
    app.put(
        &format!("/v1/users/{member}/roles"),
        owner,
        json!({"roles": ["viewer", "writer"]}),
    )
    .await
    .expect(200);
    warm(other, &key).await;
    assert!(permissions(&other.get("/v1/me", &key).await).contains(&json!("chat:write")));
    app.patch("/v1/roles/writer", owner, json!({"permissions": []}))
        .await
        .expect(200);
    assert!(!permissions(&other.get("/v1/me", &key).await).contains(&json!("chat:write")));

    // The owner is disabled, then enabled.
    app.post(&format!("/v1/users/{member}/disable"), owner, json!({}))
        .await
        .expect(200);
    other
        .get("/v1/me", &key)
        .await
        .expect_problem(403, "user_disabled");
    app.post(&format!("/v1/users/{member}/enable"), owner, json!({}))
        .await
        .expect(200);
    warm(other, &key).await;

    // The tenant is suspended, then resumed.
    let op = app.operator_key.clone();
    let tenant = format!("/v1/platform/tenants/{}", acme.id);
    app.post(&format!("{tenant}/suspend"), &op, json!({}))
        .await
        .expect(200);
    other
        .get("/v1/me", &key)
        .await
        .expect_problem(403, "tenant_suspended");
    app.post(&format!("{tenant}/resume"), &op, json!({}))
        .await
        .expect(200);
    warm(other, &key).await;

    // The key is revoked.
    app.delete(&format!("/v1/api-keys/{key_id}"), owner)
        .await
        .expect(200);
    other
        .get("/v1/me", &key)
        .await
        .expect_problem(401, "invalid_token");

    // The tenant is deleted: none of its keys works anywhere.
    let (_, second) = app.create_api_key(owner, json!({"name": "second"})).await;
    warm(other, &second).await;
    app.delete(&tenant, &op).await.expect(200);
    for server in [&app, other] {
        server
            .get("/v1/me", &second)
            .await
            .expect_problem(401, "invalid_token");
    }
    if let Some(replica) = replica {
        replica.stop().await;
    }
    app.stop().await;
}

async fn a_wrong_secret_is_refused_even_for_a_cached_key(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, key) = app
        .create_api_key(&acme.owner_token, json!({"name": "k"}))
        .await;
    warm(&app, &key).await;
    // Same ids, another secret: the cache must not stand in for the check.
    let mut forged = key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    app.get("/v1/me", &forged)
        .await
        .expect_problem(401, "invalid_token");
    app.get("/v1/me", &key).await.expect(200);
    app.stop().await;
}

on_both_backends!(
    key_changes_reach_every_replica_at_once,
    a_wrong_secret_is_refused_even_for_a_cached_key,
);
