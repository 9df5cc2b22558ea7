//! Data subject access on both backends: a user's export holds their
//! profile, API keys (no secret), conversations with every message, private
//! memories, uploaded documents with their text, usage, and the audit events
//! they caused (also through an API key) — and nothing of anyone else's. A
//! user may export themself; another member may not; an administrator may;
//! another tenant gets 404. The export is audited.

use karen_domain::{SystemReason, TenantScope, UserId};
use karen_testkit::{Backend, spawn};
use serde_json::{Value, json};

on_both_backends!(a_users_export_holds_all_of_theirs_and_nothing_else);

fn texts(value: &Value) -> String {
    value.to_string()
}

async fn a_users_export_holds_all_of_theirs_and_nothing_else(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let writer = json!({"name": "writer", "permissions": ["documents:read", "documents:write"]});
    app.post("/v1/roles", &acme.owner_token, writer)
        .await
        .expect(201);
    let (ann, ann_token) = app
        .create_user(&acme, "ann@acme.test", &["member", "writer"])
        .await;
    let (_, bob_token) = app.create_user(&acme, "bob@acme.test", &["member"]).await;

    // Ann's content: a conversation with a turn, a memory, a document, a key.
    let chat = app
        .post(
            "/v1/conversations",
            &ann_token,
            json!({"title": "ann-chat-title"}),
        )
        .await;
    let chat = chat.expect(201).str("id").to_owned();
    app.post(
        &format!("/v1/conversations/{chat}/messages"),
        &ann_token,
        json!({"content": "ann-asks-about-the-zebra-budget"}),
    )
    .await
    .expect(200);
    app.post(
        "/v1/memories",
        &ann_token,
        json!({"content": "ann-remembers-the-walrus"}),
    )
    .await
    .expect(201);
    app.upload(
        &ann_token,
        "?file_name=ann-notes.md",
        "text/markdown",
        b"# Notes\n\nann-document-says-the-pelican-flies".to_vec(),
    )
    .await
    .expect(201);
    let (key_id, key_secret) = app
        .create_api_key(
            &ann_token,
            json!({"name": "ann-key", "scopes": ["memory:write"]}),
        )
        .await;
    app.post(
        "/v1/memories",
        &key_secret,
        json!({"content": "ann-key-wrote-the-otter"}),
    )
    .await
    .expect(201);
    // Bob's content, which must not appear.
    app.post(
        "/v1/memories",
        &bob_token,
        json!({"content": "bob-remembers-the-heron"}),
    )
    .await
    .expect(201);

    let path = format!("/v1/users/{ann}/export");
    // Ann herself; bob is refused; the owner may; globex cannot see her.
    let own = app.get(&path, &ann_token).await;
    let own = own.expect(200);
    assert!(
        own.header("content-disposition")
            .unwrap_or_default()
            .contains(&format!("karen-user-{ann}.json"))
    );
    app.get(&path, &bob_token).await.expect(403);
    app.get(&path, &globex.owner_token).await.expect(404);
    app.get(
        &format!("/v1/users/{}/export", uuid::Uuid::now_v7()),
        &acme.owner_token,
    )
    .await
    .expect(404);
    let by_admin = app.get(&path, &acme.owner_token).await;
    let export = by_admin.expect(200).body.clone();

    assert_eq!(export["format"], "karen-user-export/1");
    assert_eq!(export["user"]["email"], "ann@acme.test");
    assert_eq!(export["tenant_id"], acme.id.to_string());
    let all = texts(&export);
    for mine in [
        "ann-chat-title",
        "ann-asks-about-the-zebra-budget",
        "ann-remembers-the-walrus",
        "ann-key-wrote-the-otter",
        "ann-document-says-the-pelican-flies",
        "ann-key",
    ] {
        assert!(all.contains(mine), "{mine} missing from the export");
    }
    assert!(
        !all.contains(&key_secret),
        "an API key's secret in the export"
    );
    for theirs in [
        "bob-remembers-the-heron",
        "bob@acme.test",
        &acme.owner_email,
    ] {
        assert!(!all.contains(theirs), "{theirs} in ann's export");
    }
    let messages = export["conversations"][0]["messages"].as_array().unwrap();
    assert!(messages.len() >= 2, "the question and the answer");
    assert_eq!(export["documents"].as_array().unwrap().len(), 1);
    assert!(!export["usage"].as_array().unwrap().is_empty());
    // Audit events she caused, as herself and through her key; none of others.
    let events = export["audit_events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["action"] == "auth.login"));
    assert!(
        events
            .iter()
            .any(|e| e["actor"]["kind"] == "api_key" && e["actor"]["id"] == key_id.to_string())
    );
    assert!(
        events.iter().all(
            |e| e["actor"]["id"] == ann.to_string() || e["actor"]["user_id"] == ann.to_string()
        )
    );

    // Each export is audited.
    let trail = app
        .get("/v1/audit?action=user.export", &acme.owner_token)
        .await;
    let trail = trail.expect(200);
    let exports = trail.body["items"].as_array().unwrap();
    assert_eq!(exports.len(), 2, "ann's own and the owner's");
    assert!(exports.iter().all(|e| e["target_id"] == ann.to_string()));

    // The operator's CLI path reads the same data under a system scope.
    let scope = TenantScope::system(
        karen_domain::TenantId::from_uuid(acme.id),
        SystemReason::Cli,
    );
    let cli = app
        .karen
        .services
        .privacy
        .export(scope, UserId::from_uuid(ann))
        .await
        .unwrap();
    assert_eq!(cli.memories.len(), 2);
    assert_eq!(cli.documents.len(), 1);
    app.stop().await;
}
