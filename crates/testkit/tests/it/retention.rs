//! Retention and legal hold on both backends: with the test clock moved past
//! the policy, old conversations, memories, documents and usage go and young
//! ones stay; tenant, user and conversation holds protect until lifted; a dry
//! run deletes nothing; another tenant is untouched; audit events go as a
//! prefix ending at a signed checkpoint, so `karen audit verify` still
//! passes, and the platform minimum holds; the routes need `tenant:manage`.

use std::time::Duration;

use karen_domain::TenantId;
use karen_testkit::{PASSWORD, TestApp, TestTenant, spawn, spawn_with};
use serde_json::{Value, json};

on_both_backends!(
    policy_deletes_old_data_and_holds_protect,
    audit_prefix_goes_and_verify_still_passes,
    retention_routes_need_tenant_manage_and_refuse_bad_input,
    the_schedule_enforces_every_tenant,
);

const DAY: Duration = Duration::from_secs(86_400);

async fn chat(app: &TestApp, token: &str, title: &str) -> String {
    let reply = app
        .post("/v1/conversations", token, json!({"title": title}))
        .await;
    let id = reply.expect(201).str("id").to_owned();
    app.post(
        &format!("/v1/conversations/{id}/messages"),
        token,
        json!({"content": "hello"}),
    )
    .await
    .expect(200);
    id
}

async fn memory(app: &TestApp, token: &str, content: &str) -> String {
    let reply = app
        .post("/v1/memories", token, json!({"content": content}))
        .await;
    reply.expect(201).str("id").to_owned()
}

async fn hold(app: &TestApp, token: &str, scope: &str, target: Option<&str>) -> String {
    let mut body = json!({"scope": scope, "reason": "matter 2026-17"});
    if let Some(target) = target {
        body["target_id"] = json!(target);
    }
    let reply = app.post("/v1/legal-holds", token, body).await;
    reply.expect(201).str("id").to_owned()
}

async fn run(app: &TestApp, token: &str, dry: bool) -> Value {
    let path = format!("/v1/tenant/retention/run?dry_run={dry}");
    let reply = app.post(&path, token, json!({})).await;
    reply.expect(200).body["counts"].clone()
}

async fn status(app: &TestApp, path: &str, token: &str) -> u16 {
    app.get(path, token).await.status
}

async fn relogin(app: &TestApp, tenant: &TestTenant, email: &str) -> String {
    app.token(&tenant.slug, email, PASSWORD).await
}

async fn policy_deletes_old_data_and_holds_protect(backend: karen_testkit::Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    let (_, member) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;
    let (held_user, held) = app.create_user(&acme, "held@acme.test", &["member"]).await;

    // Old data.
    let old_chat = chat(&app, &member, "old").await;
    let held_chat = chat(&app, &member, "held").await;
    let old_memory = memory(&app, &member, "Old fact: the member likes green tea").await;
    let held_memory = memory(&app, &held, "Held fact: the held user likes coffee").await;
    let old_doc = app
        .upload(
            &acme.owner_token,
            "?file_name=old.md",
            "text/markdown",
            b"# Quokka plan\n\nThe quokka project is retired.".to_vec(),
        )
        .await;
    let old_doc = old_doc.expect(201).str("id").to_owned();
    let other_chat = chat(&app, &other.owner_token, "other old").await;
    let user_hold = hold(
        &app,
        &acme.owner_token,
        "user",
        Some(&held_user.to_string()),
    )
    .await;
    let chat_hold = hold(&app, &acme.owner_token, "conversation", Some(&held_chat)).await;

    app.clock.advance(40 * DAY);
    let owner = relogin(&app, &acme, &acme.owner_email).await;
    let member = relogin(&app, &acme, "member@acme.test").await;
    let held = relogin(&app, &acme, "held@acme.test").await;
    let other_owner = relogin(&app, &other, &other.owner_email).await;
    let young_chat = chat(&app, &member, "young").await;
    let young_memory = memory(&app, &member, "Young fact: the member moved to Oslo").await;
    let policy = json!({"conversations_days": 30, "memories_days": 30, "documents_days": 30,
        "usage_days": 30});
    for token in [&owner, &other_owner] {
        let reply = app.put("/v1/tenant/retention", token, policy.clone()).await;
        assert_eq!(reply.expect(200).body["policy"]["memories_days"], json!(30));
        assert_eq!(reply.body["custom"], json!(true));
    }

    // A dry run counts and deletes nothing.
    let dry = run(&app, &owner, true).await;
    assert_eq!(dry["conversations"], json!(1), "{dry}");
    assert_eq!(dry["documents"], json!(1), "{dry}");
    assert!(dry["memories"].as_u64().unwrap() >= 1, "{dry}");
    assert!(dry["usage_records"].as_u64().unwrap() >= 1, "{dry}");
    assert!(dry["held"].as_u64().unwrap() >= 3, "{dry}");
    let old_chat_path = format!("/v1/conversations/{old_chat}");
    assert_eq!(status(&app, &old_chat_path, &member).await, 200);
    let retention = app.get("/v1/tenant/retention", &owner).await;
    assert!(retention.expect(200).body["last_run"].is_null());

    // A tenant hold keeps everything.
    let tenant_hold = hold(&app, &owner, "tenant", None).await;
    let kept = run(&app, &owner, false).await;
    for kind in ["conversations", "memories", "documents", "usage_records"] {
        assert_eq!(kept[kind], json!(0), "{kind} under a tenant hold: {kept}");
    }
    assert_eq!(status(&app, &old_chat_path, &member).await, 200);
    let holds = app.get("/v1/legal-holds", &owner).await;
    assert_eq!(holds.expect(200).body["items"].as_array().unwrap().len(), 3);
    let lift = format!("/v1/legal-holds/{tenant_hold}");
    app.delete(&lift, &owner).await.expect(204);
    app.delete(&lift, &owner)
        .await
        .expect_problem(404, "not_found");

    // Lifted: the next run deletes the old data that no other hold covers.
    let done = run(&app, &owner, false).await;
    assert_eq!(done["conversations"], json!(1), "{done}");
    assert_eq!(done["documents"], json!(1), "{done}");
    assert!(done["memories"].as_u64().unwrap() >= 1, "{done}");
    assert!(done["usage_records"].as_u64().unwrap() >= 1, "{done}");
    assert_eq!(status(&app, &old_chat_path, &member).await, 404);
    let old_memory_path = format!("/v1/memories/{old_memory}");
    assert_eq!(status(&app, &old_memory_path, &member).await, 404);
    let old_doc_path = format!("/v1/documents/{old_doc}");
    assert_eq!(status(&app, &old_doc_path, &owner).await, 404);
    let found = app
        .post(
            "/v1/search",
            &owner,
            json!({"query": "quokka", "limit": 10}),
        )
        .await;
    assert!(
        !found.expect(200).text.contains(&old_doc),
        "the deleted document's passages are still indexed: {}",
        found.text
    );
    let held_chat_path = format!("/v1/conversations/{held_chat}");
    assert_eq!(status(&app, &held_chat_path, &member).await, 200);
    let held_memory_path = format!("/v1/memories/{held_memory}");
    assert_eq!(status(&app, &held_memory_path, &held).await, 200);
    let young_chat_path = format!("/v1/conversations/{young_chat}");
    assert_eq!(status(&app, &young_chat_path, &member).await, 200);
    let young_memory_path = format!("/v1/memories/{young_memory}");
    assert_eq!(status(&app, &young_memory_path, &member).await, 200);
    let other_chat_path = format!("/v1/conversations/{other_chat}");
    assert_eq!(status(&app, &other_chat_path, &other_owner).await, 200);

    // Lifting the conversation hold lets the next run delete it.
    app.delete(&format!("/v1/legal-holds/{chat_hold}"), &owner)
        .await
        .expect(204);
    let again = run(&app, &owner, false).await;
    assert_eq!(again["conversations"], json!(1), "{again}");
    assert_eq!(status(&app, &held_chat_path, &member).await, 404);
    assert_eq!(status(&app, &held_memory_path, &held).await, 200);
    let _ = user_hold;

    // The last run is shown, and the trail has counts (never content).
    let retention = app.get("/v1/tenant/retention", &owner).await;
    let last = &retention.expect(200).body["last_run"];
    assert_eq!(last["counts"]["conversations"], json!(1), "{last}");
    let trail = app
        .get("/v1/audit?action=retention.enforced&limit=50", &owner)
        .await;
    let events = trail.expect(200).body["items"].as_array().unwrap().clone();
    assert_eq!(events.len(), 3, "{}", trail.text);
    assert!(!trail.text.contains("green tea") && !trail.text.contains("quokka"));
    for action in [
        "legal_hold.set",
        "legal_hold.lift",
        "retention.policy.update",
    ] {
        let reply = app
            .get(&format!("/v1/audit?action={action}&limit=50"), &owner)
            .await;
        let items = reply.expect(200).body["items"].as_array().unwrap().len();
        assert!(items >= 1, "no {action} event");
    }
    // The other tenant's old data is untouched.
    let other_runs = app.get("/v1/tenant/retention", &other_owner).await;
    assert!(other_runs.expect(200).body["last_run"].is_null());
    app.stop().await;
}

async fn verify(app: &TestApp, tenant: &TestTenant) -> karen_app::audit::VerifyReport {
    let id = TenantId::from_uuid(tenant.id);
    let mut reports = karen::audit::verify(&app.karen.services, Some(id))
        .await
        .unwrap();
    reports.pop().unwrap().1
}

async fn enforce(
    app: &TestApp,
    tenant: &TestTenant,
    dry: bool,
) -> karen_app::retention::RetentionReport {
    let id = TenantId::from_uuid(tenant.id);
    let mut reports = karen::retention::run(&app.karen.services, Some(id), dry)
        .await
        .unwrap();
    reports.pop().unwrap().1
}

async fn audit_prefix_goes_and_verify_still_passes(backend: karen_testkit::Backend) {
    let Some(app) = spawn_with(backend, |c| c.retention.audit_min_days = 30).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    let below = app
        .put(
            "/v1/tenant/retention",
            &acme.owner_token,
            json!({"audit_days": 10}),
        )
        .await;
    below.expect_problem(422, "validation_failed");
    assert!(below.str("detail").contains("30"), "{}", below.text);
    app.put(
        "/v1/tenant/retention",
        &acme.owner_token,
        json!({"audit_days": 30}),
    )
    .await
    .expect(200);
    for i in 0..3 {
        app.create_user(&acme, &format!("u{i}@acme.test"), &["member"])
            .await;
    }
    app.clock.advance(40 * DAY);
    let owner = relogin(&app, &acme, &acme.owner_email).await;
    app.create_user(
        &TestTenant {
            owner_token: owner.clone(),
            ..acme.clone()
        },
        "young@acme.test",
        &["member"],
    )
    .await;
    let before = verify(&app, &acme).await;
    assert!(before.ok(), "{:?}", before.problem);

    // Dry: counted, nothing removed.
    let dry = enforce(&app, &acme, true).await;
    assert!(dry.counts.audit_events > 0, "{dry:?}");
    assert_eq!(verify(&app, &acme).await.events, before.events);

    let report = enforce(&app, &acme, false).await;
    assert!(report.audit_skipped.is_none(), "{report:?}");
    assert_eq!(report.counts.audit_events, dry.counts.audit_events);
    let after = verify(&app, &acme).await;
    assert!(after.ok(), "{:?}", after.problem);
    assert!(after.first_seq.unwrap() > 1, "{after:?}");
    assert!(after.events < before.events);
    // The young events stay; a second run removes nothing more.
    let second = enforce(&app, &acme, false).await;
    assert_eq!(second.counts.audit_events, 0, "{second:?}");
    assert!(verify(&app, &acme).await.ok());
    // Later again: the next prefix goes, and the chain still verifies.
    app.clock.advance(40 * DAY);
    let third = enforce(&app, &acme, false).await;
    assert!(third.counts.audit_events > 0, "{third:?}");
    let last = verify(&app, &acme).await;
    assert!(last.ok(), "{:?}", last.problem);
    assert!(last.first_seq.unwrap() > after.first_seq.unwrap());
    // A hold keeps the trail whole.
    let owner = relogin(&app, &acme, &acme.owner_email).await;
    let tenant_hold = hold(&app, &owner, "tenant", None).await;
    app.clock.advance(40 * DAY);
    let held = enforce(&app, &acme, false).await;
    assert_eq!(held.counts.audit_events, 0);
    assert!(held.audit_skipped.is_some());
    let _ = tenant_hold;
    // PostgreSQL: only the application role may call the owner's removal
    // functions (migration 0015 took them from PUBLIC).
    if let Some(database) = &app.postgres {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&database.owner_url)
            .await
            .unwrap();
        for function in [
            "karen_audit_drop_prefix(uuid, bigint)",
            "karen_audit_purge_tenant(uuid, text)",
        ] {
            for (role, allowed) in [
                ("public", false),
                (app.config.database.app_role.as_str(), true),
            ] {
                let granted: bool =
                    sqlx::query_scalar("SELECT has_function_privilege($1, $2, 'EXECUTE')")
                        .bind(role)
                        .bind(function)
                        .fetch_one(&mut conn)
                        .await
                        .unwrap();
                assert_eq!(granted, allowed, "{role} may execute {function}");
            }
        }
    }
    // The other tenant's trail is whole.
    let untouched = verify(&app, &other).await;
    assert!(untouched.ok());
    assert_eq!(untouched.first_seq, Some(1));
    app.stop().await;
}

async fn retention_routes_need_tenant_manage_and_refuse_bad_input(backend: karen_testkit::Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let owner = acme.owner_token.as_str();
    let (member_id, member) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;
    let (_, admin) = app.create_user(&acme, "admin@acme.test", &["admin"]).await;
    let some_hold = hold(&app, owner, "user", Some(&member_id.to_string())).await;
    let calls: [(&str, String, Option<Value>); 6] = [
        ("GET", "/v1/tenant/retention".into(), None),
        (
            "PUT",
            "/v1/tenant/retention".into(),
            Some(json!({"usage_days": 90})),
        ),
        ("POST", "/v1/tenant/retention/run".into(), None),
        ("GET", "/v1/legal-holds".into(), None),
        (
            "POST",
            "/v1/legal-holds".into(),
            Some(json!({"scope": "tenant", "reason": "r"})),
        ),
        ("DELETE", format!("/v1/legal-holds/{some_hold}"), None),
    ];
    // Denied to a member, allowed to an admin.
    for (method, path, body) in &calls {
        app.call(method, path, Some(&member), body.clone())
            .await
            .expect_problem(403, "permission_denied");
    }
    for (method, path, body) in &calls {
        let reply = app.call(method, path, Some(&admin), body.clone()).await;
        assert!(
            (200..300).contains(&reply.status),
            "{method} {path}: {} {}",
            reply.status,
            reply.text
        );
    }
    // Bad input: a 422 naming the problem, nothing written.
    for body in [
        json!({"conversations_days": 0}),
        json!({"memories_days": 40000}),
        json!({"usage_days": -1}),
        json!({"audit_days": 30}),
    ] {
        app.put("/v1/tenant/retention", owner, body.clone())
            .await
            .expect_problem(422, "validation_failed");
    }
    let policy = app.get("/v1/tenant/retention", owner).await;
    assert_eq!(policy.expect(200).body["policy"]["usage_days"], json!(90));
    let audit_min = policy.body["audit_min_days"].as_u64().unwrap();
    let reply = app
        .put("/v1/tenant/retention", owner, json!({"audit_days": 30}))
        .await;
    assert!(reply.str("detail").contains(&audit_min.to_string()));
    for body in [
        json!({"scope": "team", "reason": "r"}),
        json!({"scope": "user", "reason": "r"}),
        json!({"scope": "tenant", "target_id": member_id, "reason": "r"}),
        json!({"scope": "user", "target_id": "not-an-id", "reason": "r"}),
        json!({"scope": "tenant", "reason": "  "}),
        json!({"scope": "tenant", "reason": "x".repeat(501)}),
    ] {
        app.post("/v1/legal-holds", owner, body.clone())
            .await
            .expect_problem(422, "validation_failed");
    }
    let missing = uuid::Uuid::now_v7();
    for (scope, code) in [("user", "not_found"), ("conversation", "not_found")] {
        app.post(
            "/v1/legal-holds",
            owner,
            json!({"scope": scope, "target_id": missing, "reason": "r"}),
        )
        .await
        .expect_problem(404, code);
    }
    app.delete("/v1/legal-holds/not-a-uuid", owner)
        .await
        .expect_problem(400, "bad_request");
    let holds = app.get("/v1/legal-holds", owner).await;
    assert_eq!(
        holds.expect(200).body["items"].as_array().unwrap().len(),
        1,
        "only the admin's tenant hold is active: {}",
        holds.text
    );
    app.stop().await;
}

async fn the_schedule_enforces_every_tenant(backend: karen_testkit::Backend) {
    let Some(app) = spawn_with(backend, |c| c.retention.interval_secs = 1).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let old_chat = chat(&app, &acme.owner_token, "old").await;
    app.put(
        "/v1/tenant/retention",
        &acme.owner_token,
        json!({"conversations_days": 30}),
    )
    .await
    .expect(200);
    app.clock.advance(40 * DAY);
    let owner = relogin(&app, &acme, &acme.owner_email).await;
    let path = format!("/v1/conversations/{old_chat}");
    // Runs come every second (each replaces last_run): wait for the deletion.
    for _ in 0..50 {
        if status(&app, &path, &owner).await == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status(&app, &path, &owner).await, 404);
    let reply = app.get("/v1/tenant/retention", &owner).await;
    assert!(!reply.expect(200).body["last_run"].is_null());
    let trail = app
        .get(
            "/v1/audit?action=retention.enforced&actor_kind=system",
            &owner,
        )
        .await;
    assert!(
        !trail.expect(200).body["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "the scheduled run is recorded as the system's: {}",
        trail.text
    );
    app.stop().await;
}
