//! Erasure of a user (GDPR article 17) on both backends: allowed for an
//! administrator only (members 403, another tenant 404, one's own account
//! and a user under legal hold 409, a wrong confirmation 422); afterwards
//! nothing of the user is in any store — the raw database (SQLite file and
//! WAL, or every PostgreSQL table including the full-text index), the
//! embedded index files, search results — while the other user's data and
//! the other tenant are untouched; their tokens stop working; the audit trail
//! keeps its events under a pseudonym and still verifies; and an "erasure"
//! made by editing the database, which no erasure event declares, is caught.

use karen_domain::audit::AuditFilter;
use karen_domain::audit::personal::{ErasureMask, erase_fields};
use karen_domain::ports::Store;
use karen_domain::{SystemReason, TenantId, TenantScope};
use karen_testkit::{Backend, TestApp, TestTenant, spawn};
use serde_json::json;
use uuid::Uuid;

use crate::raw_store::{raw_database, raw_files};

on_both_backends!(an_erased_user_leaves_nothing_and_the_trail_still_verifies);

fn scope(tenant: &TestTenant) -> TenantScope {
    TenantScope::system(TenantId::from_uuid(tenant.id), SystemReason::Cli)
}

/// Which of `needles` (texts, or user ids as text and as stored bytes) the
/// raw stores still hold.
async fn left_in_stores(app: &TestApp, needles: &[String], ids: &[Uuid]) -> Vec<String> {
    let mut raw = raw_database(app, true).await;
    // Everything under the data directory: the SQLite files again, and the
    // embedded vector and full-text indexes.
    raw.extend(raw_files(&app.data_dir));
    let text = String::from_utf8_lossy(&raw).to_lowercase();
    let mut found: Vec<String> = needles
        .iter()
        .filter(|n| text.contains(&n.to_lowercase()))
        .cloned()
        .collect();
    for id in ids {
        let as_text = text.contains(&id.to_string());
        let as_bytes = raw.windows(16).any(|w| w == id.as_bytes());
        if as_text || as_bytes {
            found.push(format!("user id {id}"));
        }
    }
    found
}

async fn an_erased_user_leaves_nothing_and_the_trail_still_verifies(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let writer = json!({"name": "writer", "permissions": ["documents:read", "documents:write"]});
    app.post("/v1/roles", &acme.owner_token, writer)
        .await
        .expect(201);
    let run = Uuid::now_v7().simple().to_string();
    let mark = |what: &str| format!("{what}-{}", &run[20..]);
    let (ann, ann_token) = app
        .create_user(&acme, "ann.erasable@acme.test", &["member", "writer"])
        .await;
    let (bob, bob_token) = app.create_user(&acme, "bob@acme.test", &["member"]).await;
    let (admin, admin_token) = app.create_user(&acme, "admin@acme.test", &["admin"]).await;

    // Ann's marks share a tag of their own, which no one else's data holds.
    let ann_tag = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let ann_mark = |what: &str| format!("{what}-{ann_tag}");
    let ann_secrets = [
        ann_mark("zebra"),
        ann_mark("walrus"),
        ann_mark("otter"),
        ann_mark("pelican"),
        ann_mark("chat"),
    ];
    let chat = app
        .post(
            "/v1/conversations",
            &ann_token,
            json!({"title": ann_secrets[4]}),
        )
        .await;
    let chat = chat.expect(201).str("id").to_owned();
    app.post(
        &format!("/v1/conversations/{chat}/messages"),
        &ann_token,
        json!({"content": format!("please remember {}", ann_secrets[0])}),
    )
    .await
    .expect(200);
    app.post(
        "/v1/memories",
        &ann_token,
        json!({"content": ann_secrets[1]}),
    )
    .await
    .expect(201);
    app.upload(
        &ann_token,
        "?file_name=ann-notes.md",
        "text/markdown",
        format!("# Notes\n\nthe {} flies at dawn", ann_secrets[3]).into_bytes(),
    )
    .await
    .expect(201);
    let (_, key) = app
        .create_api_key(
            &ann_token,
            json!({"name": "ann-key", "scopes": ["memory:write"]}),
        )
        .await;
    app.post("/v1/memories", &key, json!({"content": ann_secrets[2]}))
        .await
        .expect(201);
    let bob_memory = mark("heron");
    app.post("/v1/memories", &bob_token, json!({"content": bob_memory}))
        .await
        .expect(201);
    let globex_memory = mark("globex-ibis");
    app.post(
        "/v1/memories",
        &globex.owner_token,
        json!({"content": globex_memory}),
    )
    .await
    .expect(201);

    let path = format!("/v1/users/{ann}/erase");
    let confirm = json!({"confirm_email": "ann.erasable@acme.test"});
    // Denied: a member, another tenant, a wrong confirmation, one's own account.
    app.post(&path, &bob_token, confirm.clone())
        .await
        .expect_problem(403, "permission_denied");
    app.post(&path, &globex.owner_token, confirm.clone())
        .await
        .expect_problem(404, "not_found");
    app.post(
        &path,
        &acme.owner_token,
        json!({"confirm_email": "bob@acme.test"}),
    )
    .await
    .expect(422);
    app.post(
        &format!("/v1/users/{admin}/erase"),
        &admin_token,
        json!({"confirm_email": "admin@acme.test"}),
    )
    .await
    .expect_problem(409, "conflict");
    // An administrator cannot erase someone holding more than they do.
    let owner_path = format!("/v1/users/{}/erase", acme.owner_id);
    let above = app
        .post(
            &owner_path,
            &admin_token,
            json!({"confirm_email": acme.owner_email}),
        )
        .await;
    assert_eq!(above.status, 403, "{}", above.text);
    app.post(
        &path,
        &acme.owner_token,
        json!({"confirm_email": "x", "extra": 1}),
    )
    .await
    .expect(422);
    // A legal hold on her refuses it until lifted.
    let hold = app
        .post(
            "/v1/legal-holds",
            &acme.owner_token,
            json!({"scope": "user", "target_id": ann.to_string(), "reason": "matter 7"}),
        )
        .await;
    let hold = hold.expect(201).str("id").to_owned();
    app.post(&path, &acme.owner_token, confirm.clone())
        .await
        .expect_problem(409, "conflict");
    app.delete(&format!("/v1/legal-holds/{hold}"), &acme.owner_token)
        .await
        .expect(204);
    // Nothing was removed by the refused attempts.
    app.get(&format!("/v1/users/{ann}"), &acme.owner_token)
        .await
        .expect(200);

    let erased = app.post(&path, &acme.owner_token, confirm.clone()).await;
    let report = erased.expect(200).body.clone();
    assert_eq!(report["conversations"], 1, "{report}");
    // Her two, and what the assistant extracted from her message.
    assert!(report["memories"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["documents_deleted"], 1, "{report}");
    assert_eq!(report["api_keys"], 1, "{report}");
    assert!(
        report["audit_events_erased"].as_u64().unwrap() > 3,
        "{report}"
    );
    assert_eq!(report["audit_events_kept_legacy"], 0, "{report}");
    assert_eq!(report["files_compacted"], true, "{report}");
    let pseudonym = report["pseudonym"].as_str().unwrap().to_owned();
    assert!(pseudonym.starts_with("erased:"));

    // Gone for the API: her tokens, her profile, her content in search.
    app.get("/v1/me", &ann_token).await.expect(401);
    app.post("/v1/memories", &key, json!({"content": "x"}))
        .await
        .expect(401);
    app.get(&format!("/v1/users/{ann}"), &acme.owner_token)
        .await
        .expect(404);
    app.post(&path, &acme.owner_token, confirm)
        .await
        .expect(404);
    let search = app
        .post(
            "/v1/search",
            &acme.owner_token,
            json!({"query": ann_secrets[3]}),
        )
        .await;
    assert!(!search.expect(200).text.contains(&ann_secrets[3]));
    // Bob and globex keep theirs.
    let bobs = app.get("/v1/memories", &bob_token).await;
    assert!(bobs.expect(200).text.contains(&bob_memory));
    let theirs = app.get("/v1/memories", &globex.owner_token).await;
    assert!(theirs.expect(200).text.contains(&globex_memory));

    // Gone from every store, byte for byte.
    let mut needles: Vec<String> = ann_secrets.to_vec();
    needles.push("ann.erasable@acme.test".into());
    // The run's mark alone: an index that tokenised "walrus-<mark>" keeps it.
    needles.push(ann_tag.clone());
    let left = left_in_stores(&app, &needles, &[ann]).await;
    assert!(left.is_empty(), "left after erasure: {left:?}");
    // The scan does find what stays (content itself may be encrypted at rest).
    let kept = left_in_stores(&app, &["bob@acme.test".to_owned()], &[bob]).await;
    assert_eq!(kept.len(), 2, "bob's data must stay: {kept:?}");

    // The trail keeps her events under the pseudonym, records the erasure,
    // and still verifies.
    let trail = app.get("/v1/audit?limit=200", &acme.owner_token).await;
    let trail = trail.expect(200).body.clone();
    let items = trail["items"].as_array().unwrap();
    assert!(items.iter().any(|e| e["actor"]["id"] == pseudonym));
    let erase_event = items
        .iter()
        .find(|e| e["action"] == "user.erase")
        .expect("the erasure is audited");
    assert_eq!(erase_event["target_id"], pseudonym);
    assert_eq!(erase_event["actor"]["id"], acme.owner_id.to_string());
    let verified = app.karen.services.audit.verify(scope(&acme)).await.unwrap();
    assert!(verified.problem.is_none(), "{:?}", verified.problem);
    let other = app
        .karen
        .services
        .audit
        .verify(scope(&globex))
        .await
        .unwrap();
    assert!(other.problem.is_none(), "{:?}", other.problem);

    // Someone with the database "erases" who did something: caught.
    forge_an_erasure(&app, &acme, bob).await;
    let forged = app.karen.services.audit.verify(scope(&acme)).await.unwrap();
    let problem = forged.problem.expect("a forged erasure must not verify");
    assert_eq!(problem.kind, "undeclared_erasure", "{problem:?}");
    app.stop().await;
}

/// Pseudonymises one of bob's events through the store, as someone with
/// write access to the database could, without an erasure event.
async fn forge_an_erasure(app: &TestApp, tenant: &TestTenant, bob: Uuid) {
    let mut tx = app.karen.store.tenant(scope(tenant)).await.unwrap();
    let filter = AuditFilter {
        actor_kind: Some("user"),
        actor_id: Some(bob.to_string()),
        ..AuditFilter::default()
    };
    let events = tx.audit().list_audit(&filter, 0, 10).await.unwrap();
    let event = events.first().expect("bob has events");
    let mask = ErasureMask {
        actor: true,
        ..ErasureMask::default()
    };
    let (entry, seal, _) = erase_fields(
        &event.entry,
        &event.personal,
        mask,
        "erased:0000000000000000",
    )
    .unwrap();
    tx.audit()
        .redact_audit(event.seq, &entry, &seal)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

on_both_backends!(every_populated_user_can_be_erased_and_the_trail_verifies);

/// A tenant with every kind of row (SSO identity links, SCIM provisioning and
/// groups, MFA, keys, budgets, holds…): a held conversation blocks its
/// owner's erasure; once lifted, every user but the owner is erased and the
/// trail still verifies.
async fn every_populated_user_can_be_erased_and_the_trail_verifies(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    app.populate(&acme).await;
    let owner = acme.owner_token.as_str();
    let users = app.get("/v1/users?limit=100", owner).await;
    let users = users.expect(200).body["items"].as_array().unwrap().clone();
    let others: Vec<(String, String)> = users
        .iter()
        .filter(|u| u["id"] != acme.owner_id.to_string())
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_owned(),
                u["email"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(others.len() >= 2, "the member and the SCIM user: {users:?}");
    let member = others
        .iter()
        .find(|(_, email)| email == "member@acme.test")
        .unwrap();
    erase(&app, owner, &member.0, &member.1)
        .await
        .expect_problem(409, "conflict");
    let holds = app.get("/v1/legal-holds", owner).await;
    for hold in holds.expect(200).body["items"].as_array().unwrap() {
        let id = hold["id"].as_str().unwrap();
        app.delete(&format!("/v1/legal-holds/{id}"), owner)
            .await
            .expect(204);
    }
    for (id, email) in &others {
        let erased = erase(&app, owner, id, email).await;
        assert_eq!(erased.status, 200, "{email}: {}", erased.text);
    }
    let listed = app.get("/v1/users?limit=100", owner).await;
    assert_eq!(
        listed.expect(200).body["items"].as_array().unwrap().len(),
        1
    );
    let verified = app.karen.services.audit.verify(scope(&acme)).await.unwrap();
    assert!(verified.problem.is_none(), "{:?}", verified.problem);
    app.stop().await;
}

async fn erase(app: &TestApp, token: &str, id: &str, email: &str) -> karen_testkit::Reply {
    let path = format!("/v1/users/{id}/erase");
    app.post(&path, token, json!({"confirm_email": email}))
        .await
}
