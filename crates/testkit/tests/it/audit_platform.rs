//! The audit trail's further reach, on both backends: checkpoints signed by a
//! retired key still verify after a key rotation (and an unknown key still
//! fails), permission refusals and chat messages are recorded, and operator
//! actions outside any tenant go to the platform chain, which only the
//! operator reads, which verification checks, and which outlives a deleted
//! tenant.

use karen_testkit::{Backend, PASSWORD, spawn};
use serde_json::{Value, json};

use super::audit::{actions, tamper, tenant_with_checkpoint, verify};

on_both_backends!(
    checkpoints_of_a_retired_key_still_verify,
    permission_refusals_are_recorded,
    chat_messages_and_completions_are_recorded,
    operator_actions_go_to_the_platform_chain,
);

async fn checkpoints_of_a_retired_key_still_verify(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (tenant, seq) = tenant_with_checkpoint(&app, "rotated").await;
    let old_key = app
        .get("/v1/audit/checkpoints/key", &tenant.owner_token)
        .await;
    let old_public = old_key.expect(200).str("public_key_hex").to_owned();
    let old_id = old_key.str("key_id").to_owned();
    // Rotate: a new key signs from now on, the old public key is retired.
    let new_key = app.data_dir.join("audit-signing-2.key");
    karen_crypto::FileAuditSigner::load_or_create(&new_key, true).unwrap();
    // (A restart with the new configuration: replicas would not share the
    // SQLite file.)
    let mut app = app;
    app.config.audit.signing_key_file = Some(new_key.clone());
    app.config.audit.retired_public_keys = vec![old_public.clone()];
    let mut app = app.restart().await;
    // More events, then a checkpoint signed by the new key.
    app.post(
        "/v1/users",
        &tenant.owner_token,
        json!({"email": "later@rotated.test", "password": PASSWORD}),
    )
    .await
    .expect(201);
    let id = karen_domain::TenantId::from_uuid(tenant.id);
    let newer = karen::audit::checkpoint_all(&app.karen.services, Some(id))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(newer.seq > seq);
    assert_ne!(newer.key_id, old_id, "the new key signs");
    let report = verify(&app, &tenant).await;
    assert!(report.ok(), "old and new checkpoints verify: {report:?}");
    assert!(report.checkpoints >= 2);
    // Without the retired key, the old checkpoint is by an unknown key.
    app.config.audit.retired_public_keys.clear();
    let app = app.restart().await;
    let problem = verify(&app, &tenant).await.problem.unwrap();
    assert_eq!(problem.kind, "unknown_key");
    assert_eq!(problem.seq, seq);
    // A malformed retired key is a configuration error, named.
    let mut config = app.config.clone();
    config.audit.retired_public_keys = vec!["not-hex".into()];
    let refused = config.validate().unwrap_err().to_string();
    assert!(
        refused.contains("audit.retired_public_keys[0]"),
        "{refused}"
    );
    app.stop().await;
}

async fn permission_refusals_are_recorded(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("refusals").await;
    let (member_id, member) = app
        .create_user(&tenant, "m@refusals.test", &["member"])
        .await;
    app.post(
        "/v1/users",
        &member,
        json!({"email": "x@refusals.test", "password": PASSWORD}),
    )
    .await
    .expect_problem(403, "permission_denied");
    let refused = app
        .get("/v1/audit?action=authz.denied", &tenant.owner_token)
        .await;
    let items = refused.expect(200).body["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(items.len(), 1, "{}", refused.text);
    let event = &items[0];
    assert_eq!(event["outcome"], "denied");
    assert_eq!(event["actor"]["id"], member_id.to_string());
    assert_eq!(event["target_type"], "permission");
    assert_eq!(event["target_id"], "users:manage");
    assert_eq!(event["diff"]["after"]["route"], "POST /v1/users");
    assert!(event["request_id"].is_string());
    // An allowed request records no refusal.
    app.get("/v1/conversations", &member).await.expect(200);
    let again = app
        .get("/v1/audit?action=authz.denied", &tenant.owner_token)
        .await;
    assert_eq!(again.expect(200).body["items"].as_array().unwrap().len(), 1);
    // A refusal whose record cannot be written is still a 403, never a 500.
    break_audit_inserts(&app, "authz.denied").await;
    app.get("/v1/users", &member)
        .await
        .expect_problem(403, "permission_denied");
    assert!(verify(&app, &tenant).await.ok());
    app.stop().await;
}

/// Makes the database refuse audit inserts of `action` (as the owner).
async fn break_audit_inserts(app: &karen_testkit::TestApp, action: &str) {
    match app.backend {
        Backend::Sqlite => {
            let pool = app.karen.store.sqlite_pool().unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TRIGGER injected_failure BEFORE INSERT ON audit_events \
                 WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'injected'); END"
            )))
            .execute(pool)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            use sqlx::Connection as _;
            let database = app.postgres.as_ref().unwrap();
            let mut conn = sqlx::PgConnection::connect(&database.owner_url)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.action = '{action}' THEN RAISE EXCEPTION 'injected'; END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER injected_failure BEFORE INSERT ON audit_events \
                 FOR EACH ROW EXECUTE FUNCTION injected_failure();"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
    }
}

async fn chat_messages_and_completions_are_recorded(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("chatty").await;
    let token = tenant.owner_token.as_str();
    let chat = app
        .post("/v1/conversations", token, json!({"title": "t"}))
        .await;
    let chat = chat.expect(201).str("id").to_owned();
    app.post(
        &format!("/v1/conversations/{chat}/messages"),
        token,
        json!({"content": "the secret plan is pineapple"}),
    )
    .await
    .expect(200);
    let trail = app.get("/v1/audit?action=message.create", token).await;
    let items = trail.expect(200).body["items"].as_array().unwrap().clone();
    let roles: Vec<&Value> = items.iter().map(|e| &e["diff"]["after"]["role"]).collect();
    assert_eq!(
        roles,
        [&json!("user"), &json!("assistant")],
        "{}",
        trail.text
    );
    for event in &items {
        assert_eq!(event["target_type"], "message");
        assert_eq!(event["diff"]["after"]["conversation_id"], chat.as_str());
    }
    assert!(
        !trail.text.contains("pineapple"),
        "no message content in the trail"
    );
    // The OpenAI-compatible endpoint meters the call, so it is recorded.
    app.post(
        "/v1/chat/completions",
        token,
        json!({"model": "karen-offline-extractive",
               "messages": [{"role": "user", "content": "a mango secret"}]}),
    )
    .await
    .expect(200);
    let completions = app.get("/v1/audit?action=chat.completion", token).await;
    let items = completions.expect(200).body["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(items.len(), 1, "{}", completions.text);
    assert_eq!(items[0]["target_type"], "model");
    assert!(!completions.text.contains("mango"));
    // Another tenant's trail holds none of it.
    let other = app.create_tenant("quiet").await;
    let theirs = app.get("/v1/audit?limit=200", &other.owner_token).await;
    let theirs = actions(theirs.expect(200));
    assert!(
        !theirs
            .iter()
            .any(|a| a == "message.create" || a == "chat.completion")
    );
    assert!(verify(&app, &tenant).await.ok());
    app.stop().await;
}

fn platform_actions(reply: &karen_testkit::Reply, target: &str) -> Vec<String> {
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target_id"] == target)
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

async fn operator_actions_go_to_the_platform_chain(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let op = app.operator_key.clone();
    let doomed = app.create_tenant("doomed").await;
    let id = doomed.id.to_string();
    app.post(
        &format!("/v1/platform/tenants/{id}/suspend"),
        &op,
        json!({}),
    )
    .await
    .expect(200);
    app.put(
        &format!("/v1/platform/tenants/{id}/rate-limits"),
        &op,
        json!({"user": {"requests": 100, "window_secs": 60}}),
    )
    .await
    .expect(200);
    app.delete(&format!("/v1/platform/tenants/{id}"), &op)
        .await
        .expect(200);
    // The deleted tenant's record survives in the platform chain.
    let trail = app.get("/v1/platform/audit?limit=200", &op).await;
    trail.expect(200);
    assert_eq!(
        platform_actions(&trail, &id),
        [
            "tenant.create",
            "tenant.suspend",
            "tenant.rate_limits.update",
            "tenant.delete",
            "tenant.delete.completed"
        ],
        "{}",
        trail.text
    );
    let deleted = app
        .get("/v1/platform/audit?action=tenant.delete", &op)
        .await;
    let event = &deleted.expect(200).body["items"][0];
    assert_eq!(event["actor"]["kind"], "operator");
    assert_eq!(event["target_id"], id.as_str());
    // Reading is itself recorded.
    let reads = app
        .get("/v1/platform/audit?action=platform.audit.read", &op)
        .await;
    assert!(
        !reads.expect(200).body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Bad input is a 4xx problem.
    app.get("/v1/platform/audit?limit=0", &op)
        .await
        .expect_problem(422, "validation_failed");
    app.get("/v1/platform/audit?format=csv", &op)
        .await
        .expect_problem(422, "validation_failed");
    // No tenant credential reads it, and no tenant's trail holds it.
    let other = app.create_tenant("bystander").await;
    app.get("/v1/platform/audit", &other.owner_token)
        .await
        .expect_problem(401, "invalid_token");
    let theirs = app.get("/v1/audit?limit=200", &other.owner_token).await;
    assert!(!theirs.expect(200).text.contains(&id));
    // The chain verifies, with a checkpoint; a changed byte is found.
    let signed = app
        .karen
        .services
        .audit
        .checkpoint_platform()
        .await
        .unwrap();
    assert!(signed.is_some());
    let report = karen::audit::verify_platform(&app.karen.services)
        .await
        .unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(report.events >= 8 && report.checkpoints == 1, "{report:?}");
    tamper(
        &app,
        &["UPDATE platform_audit_events SET target_id = 'forged' WHERE seq = 2".to_owned()],
    )
    .await;
    let report = karen::audit::verify_platform(&app.karen.services)
        .await
        .unwrap();
    let problem = report.problem.unwrap();
    assert_eq!((problem.kind, problem.seq), ("hash_mismatch", 2));
    app.stop().await;
}
