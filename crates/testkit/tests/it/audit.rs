//! The tamper-evident audit trail on both backends: who may read it (and that
//! reading it is recorded), tenant isolation, exports, checkpoints, every
//! tampering case `karen audit verify` must catch, rollback of an action whose
//! audit write fails, append-only enforcement, and a linear chain under
//! concurrent requests.

use karen_testkit::{Backend, PASSWORD, TestApp, TestTenant, spawn};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    reading_needs_audit_read_is_audited_and_isolated,
    exports_stream_jsonl_and_csv,
    checkpoints_are_signed_and_published,
    verify_catches_a_changed_byte,
    verify_catches_a_deleted_event,
    verify_catches_a_reordering,
    verify_catches_a_truncated_tail,
    verify_catches_tampering_at_every_position,
    an_action_whose_audit_write_fails_rolls_back,
    audit_rows_are_append_only,
    concurrent_requests_keep_the_chain_linear,
    content_reads_and_searches_are_recorded,
);

pub(crate) fn actions(reply: &karen_testkit::Reply) -> Vec<String> {
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) async fn verify(app: &TestApp, tenant: &TestTenant) -> karen_app::audit::VerifyReport {
    let id = karen_domain::TenantId::from_uuid(tenant.id);
    let mut reports = karen::audit::verify(&app.karen.services, Some(id))
        .await
        .unwrap();
    reports.pop().unwrap().1
}

/// Runs raw SQL as the database's owner (PostgreSQL, with triggers off: an
/// attacker with that power) or on the SQLite file (triggers dropped first).
pub(crate) async fn tamper(app: &TestApp, statements: &[String]) {
    match app.backend {
        Backend::Sqlite => {
            let pool = app.karen.store.sqlite_pool().unwrap();
            for trigger in [
                "audit_events_no_update",
                "audit_events_no_delete",
                "audit_checkpoints_no_update",
                "audit_checkpoints_no_delete",
                "platform_audit_events_no_update",
                "platform_audit_events_no_delete",
            ] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP TRIGGER IF EXISTS {trigger}"
                )))
                .execute(pool)
                .await
                .unwrap();
            }
            for statement in statements {
                sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
        Backend::Postgres => {
            use sqlx::Connection as _;
            let database = app.postgres.as_ref().unwrap();
            let mut conn = sqlx::PgConnection::connect(&database.owner_url)
                .await
                .unwrap();
            sqlx::query("SET session_replication_role = replica")
                .execute(&mut conn)
                .await
                .unwrap();
            for statement in statements {
                sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            conn.close().await.unwrap();
        }
    }
}

/// The tenant id as the backend stores it, for raw SQL.
fn tenant_literal(app: &TestApp, tenant: &TestTenant) -> String {
    match app.backend {
        Backend::Sqlite => format!("X'{}'", tenant.id.simple()),
        Backend::Postgres => format!("'{}'::uuid", tenant.id),
    }
}

/// A tenant with a few more events and a signed checkpoint at its newest one.
pub(crate) async fn tenant_with_checkpoint(app: &TestApp, slug: &str) -> (TestTenant, i64) {
    let tenant = app.create_tenant(slug).await;
    for n in 0..3 {
        app.post(
            "/v1/users",
            &tenant.owner_token,
            json!({"email": format!("u{n}@{slug}.test"), "password": PASSWORD}),
        )
        .await
        .expect(201);
    }
    let created = app
        .post("/v1/audit/checkpoints", &tenant.owner_token, json!({}))
        .await;
    let seq = created.expect(200).body["checkpoint"]["seq"]
        .as_i64()
        .unwrap();
    assert!(seq >= 5, "events so far: {}", created.text);
    let report = verify(app, &tenant).await;
    assert!(report.ok(), "an untouched chain verifies: {report:?}");
    (tenant, seq)
}

async fn reading_needs_audit_read_is_audited_and_isolated(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let bravo = app.create_tenant("bravo").await;
    let (member_id, member) = app
        .create_user(&alpha, "member@alpha.test", &["member"])
        .await;
    let (_, analyst) = app
        .create_user(&alpha, "analyst@alpha.test", &["analyst"])
        .await;
    app.login("alpha", "member@alpha.test", "wrong password entirely")
        .await
        .expect(401);

    // Denied without audit:read, allowed with it (owner, analyst).
    app.get("/v1/audit", &member)
        .await
        .expect_problem(403, "permission_denied");
    app.get("/v1/audit/export", &member).await.expect(403);
    app.get("/v1/audit/checkpoints", &member).await.expect(403);
    let page = app.get("/v1/audit?limit=200", &alpha.owner_token).await;
    let seen = actions(page.expect(200));
    for wanted in [
        "tenant.create",
        "user.create",
        "auth.login",
        "auth.login.failed",
    ] {
        assert!(seen.iter().any(|a| a == wanted), "{wanted} in {seen:?}");
    }
    let failed = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "auth.login.failed")
        .unwrap();
    assert_eq!(failed["outcome"], "failure");
    assert_eq!(failed["target_id"], member_id.to_string());
    assert!(
        !page.text.contains("wrong password"),
        "no secrets in the trail"
    );
    let created = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "user.create" && e["target_id"] == member_id.to_string())
        .unwrap();
    assert_eq!(created["actor"]["kind"], "user");
    assert_eq!(created["actor"]["id"], alpha.owner_id.to_string());
    assert_eq!(created["diff"]["after"]["email"], "member@alpha.test");
    assert!(
        created["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(created["ip"].as_str().is_some());
    // Sequence numbers are 1, 2, 3… and each links to the one before.
    let items = page.body["items"].as_array().unwrap();
    for (i, pair) in items.windows(2).enumerate() {
        assert_eq!(pair[0]["seq"].as_i64().unwrap(), i as i64 + 1);
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }

    // Reading the trail is itself recorded, with the reader as actor.
    let again = app.get("/v1/audit?action=audit.read", &analyst).await;
    let reads = again.expect(200).body["items"].as_array().unwrap().clone();
    assert!(
        !reads.is_empty(),
        "the owner's read was recorded: {}",
        again.text
    );
    assert!(reads.iter().all(|e| e["action"] == "audit.read"));

    // Filters and paging.
    let first = app.get("/v1/audit?limit=2", &alpha.owner_token).await;
    let cursor = first.expect(200).str("next_cursor").to_owned();
    let second = app
        .get(
            &format!("/v1/audit?limit=2&after={cursor}"),
            &alpha.owner_token,
        )
        .await;
    assert_eq!(second.expect(200).body["items"][0]["seq"], 3);
    let failures = app
        .get("/v1/audit?outcome=failure", &alpha.owner_token)
        .await;
    assert!(
        actions(failures.expect(200))
            .iter()
            .all(|a| a == "auth.login.failed")
    );
    let by_actor = app
        .get(
            &format!(
                "/v1/audit?actor_kind=user&actor_id={}&target_type=user",
                alpha.owner_id
            ),
            &alpha.owner_token,
        )
        .await;
    assert!(!actions(by_actor.expect(200)).is_empty());
    for bad in [
        "outcome=maybe",
        "after=yesterday",
        "limit=0",
        "action=User.Create",
        "actor_kind=robot",
        "from=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "from=not-a-time",
        "colour=blue",
    ] {
        let reply = app
            .get(&format!("/v1/audit?{bad}"), &alpha.owner_token)
            .await;
        assert!(
            matches!(reply.status, 400 | 422),
            "{bad}: {} {}",
            reply.status,
            reply.text
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json"),
            "{bad}"
        );
    }

    // Tenants never see each other's events.
    let alpha_text = app
        .get("/v1/audit?limit=200", &alpha.owner_token)
        .await
        .text;
    let bravo_page = app.get("/v1/audit?limit=200", &bravo.owner_token).await;
    bravo_page.expect(200);
    assert!(!bravo_page.text.contains(&alpha.owner_id.to_string()));
    assert!(!bravo_page.text.contains("member@alpha.test"));
    assert!(!alpha_text.contains(&bravo.owner_id.to_string()));
    assert_eq!(
        bravo_page.body["items"][0]["seq"], 1,
        "bravo has its own chain"
    );
    let bravo_export = app.get("/v1/audit/export", &bravo.owner_token).await;
    assert!(
        !bravo_export
            .expect(200)
            .text
            .contains(&alpha.owner_id.to_string())
    );
    app.stop().await;
}

async fn exports_stream_jsonl_and_csv(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("exporter").await;
    for n in 0..4 {
        app.post(
            "/v1/users",
            &tenant.owner_token,
            json!({"email": format!("u{n}@exporter.test"), "password": PASSWORD}),
        )
        .await
        .expect(201);
    }
    let jsonl = app.get("/v1/audit/export", &tenant.owner_token).await;
    jsonl.expect(200);
    assert_eq!(jsonl.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = jsonl
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 7, "{}", jsonl.text);
    let filtered = app
        .get(
            "/v1/audit/export?format=jsonl&action=user.create",
            &tenant.owner_token,
        )
        .await;
    assert_eq!(
        filtered.expect(200).text.lines().count(),
        5,
        "owner and four users"
    );
    let csv = app
        .get(
            "/v1/audit/export?format=csv&action=user.create",
            &tenant.owner_token,
        )
        .await;
    csv.expect(200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.text.starts_with("seq,at,actor_kind,"));
    // The diff (JSON, with quotes and commas) is one quoted field with quotes doubled.
    assert!(csv.text.contains("\"\"after\"\":{"), "{}", csv.text);
    app.get("/v1/audit/export?format=xml", &tenant.owner_token)
        .await
        .expect_problem(422, "validation_failed");
    // The export itself was recorded.
    let exports = app
        .get("/v1/audit?action=audit.export", &tenant.owner_token)
        .await;
    assert_eq!(
        exports.expect(200).body["items"].as_array().unwrap().len(),
        3
    );
    app.stop().await;
}

async fn checkpoints_are_signed_and_published(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (tenant, seq) = tenant_with_checkpoint(&app, "signer").await;
    let list = app.get("/v1/audit/checkpoints", &tenant.owner_token).await;
    let items = list.expect(200).body["items"].as_array().unwrap().clone();
    let newest = items.last().unwrap();
    assert_eq!(newest["seq"].as_i64().unwrap(), seq);
    let key = app
        .get("/v1/audit/checkpoints/key", &tenant.owner_token)
        .await;
    key.expect(200);
    assert_eq!(key.str("algorithm"), "Ed25519");
    assert_eq!(newest["key_id"], key.body["key_id"]);
    // The event at the checkpoint has the hash it signed.
    let event = app
        .get(
            &format!("/v1/audit?after={}&limit=1", seq - 1),
            &tenant.owner_token,
        )
        .await;
    assert_eq!(event.expect(200).body["items"][0]["hash"], newest["hash"]);
    // Nothing new since: no second checkpoint (the list above was audited, so one more).
    let again = app
        .post("/v1/audit/checkpoints", &tenant.owner_token, json!({}))
        .await;
    let signed = again.expect(200).body["checkpoint"]["seq"]
        .as_i64()
        .unwrap();
    assert!(signed > seq);
    // Who asked for it is recorded right after the event it covers.
    let asked = app
        .get(&format!("/v1/audit?after={signed}"), &tenant.owner_token)
        .await;
    let asked = &asked.expect(200).body["items"][0];
    assert_eq!(asked["action"], "audit.checkpoint");
    assert_eq!(asked["target_id"], signed.to_string());
    // The key file is private to its owner (embedded mode writes it).
    #[cfg(unix)]
    if backend == Backend::Sqlite {
        use std::os::unix::fs::PermissionsExt as _;
        let path = app.data_dir.join("audit-signing.key");
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let member = app
        .create_user(&tenant, "m@signer.test", &["member"])
        .await
        .1;
    app.get("/v1/audit/checkpoints/key", &member)
        .await
        .expect(403);
    app.post("/v1/audit/checkpoints", &member, json!({}))
        .await
        .expect(403);
    app.stop().await;
}

/// Tampers with a fresh tenant's checkpointed trail (`statements` get the
/// tenant as a SQL literal and the checkpoint's seq) and returns the first
/// problem verification finds, with that seq.
async fn problem_after(
    app: &TestApp,
    slug: &str,
    statements: impl FnOnce(&str, i64) -> Vec<String>,
) -> (karen_app::audit::VerifyProblem, i64) {
    let (tenant, seq) = tenant_with_checkpoint(app, slug).await;
    let t = tenant_literal(app, &tenant);
    tamper(app, &statements(&t, seq)).await;
    let report = verify(app, &tenant).await;
    let problem = report
        .problem
        .unwrap_or_else(|| panic!("tampering in {slug} went unnoticed"));
    (problem, seq)
}

async fn verify_catches_a_changed_byte(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (problem, _) = problem_after(&app, "byte", |t, _| {
        vec![format!(
            "UPDATE audit_events SET ip = '10.6.6.6' WHERE tenant_id = {t} AND seq = 3"
        )]
    })
    .await;
    assert_eq!((problem.seq, problem.kind), (3, "hash_mismatch"));
    app.stop().await;
}

async fn verify_catches_a_deleted_event(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (problem, _) = problem_after(&app, "deleted", |t, _| {
        vec![format!(
            "DELETE FROM audit_events WHERE tenant_id = {t} AND seq = 2"
        )]
    })
    .await;
    assert_eq!((problem.seq, problem.kind), (2, "missing_event"));
    app.stop().await;
}

async fn verify_catches_a_reordering(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (problem, _) = problem_after(&app, "reorder", |t, _| {
        vec![
            format!("UPDATE audit_events SET seq = 1000000 WHERE tenant_id = {t} AND seq = 3"),
            format!("UPDATE audit_events SET seq = 3 WHERE tenant_id = {t} AND seq = 4"),
            format!("UPDATE audit_events SET seq = 4 WHERE tenant_id = {t} AND seq = 1000000"),
        ]
    })
    .await;
    assert_eq!(problem.seq, 3, "{problem:?}");
    app.stop().await;
}

/// Verification reads a chain as two halves at once: a deleted or changed
/// event is found at its own sequence number wherever it sits, at either
/// end of either half included.
async fn verify_catches_tampering_at_every_position(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let (probe, _) = tenant_with_checkpoint(&app, "probe").await;
    let head = verify(&app, &probe).await.last_seq.unwrap();
    for seq in 1..=head {
        let changed = format!("changed{seq}");
        let (problem, _) = problem_after(&app, &changed, |t, _| {
            vec![format!(
                "UPDATE audit_events SET ip = '10.6.6.6' WHERE tenant_id = {t} AND seq = {seq}"
            )]
        })
        .await;
        assert_eq!(
            (problem.seq, problem.kind),
            (seq, "hash_mismatch"),
            "{problem:?}"
        );
        // Deleting the newest event leaves a shorter chain that still verifies
        // (the newest checkpoint is older); every other deletion shows.
        if seq < head {
            let deleted = format!("deleted{seq}");
            let (problem, _) = problem_after(&app, &deleted, |t, _| {
                vec![format!(
                    "DELETE FROM audit_events WHERE tenant_id = {t} AND seq = {seq}"
                )]
            })
            .await;
            // Without its first event the chain starts without a checkpoint before it.
            let kind = if seq == 1 {
                "missing_prefix"
            } else {
                "missing_event"
            };
            assert_eq!((problem.seq, problem.kind), (seq, kind), "{problem:?}");
        }
    }
    app.stop().await;
}

async fn verify_catches_a_truncated_tail(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    // The tail is cut consistently (the chain that is left verifies by itself).
    let (problem, seq) = problem_after(&app, "truncated", |t, seq| {
        vec![
            format!(
                "DELETE FROM audit_events WHERE tenant_id = {t} AND seq >= {}",
                seq - 1
            ),
            format!(
                "UPDATE audit_heads SET seq = {} WHERE tenant_id = {t}",
                seq - 2
            ),
        ]
    })
    .await;
    assert_eq!((problem.seq, problem.kind), (seq - 1, "truncated"));
    // And the CLI exits non-zero on it (the library function it prints).
    let all = karen::audit::verify(&app.karen.services, None)
        .await
        .unwrap();
    assert!(all.iter().any(|(_, r)| !r.ok()));
    app.stop().await;
}

async fn an_action_whose_audit_write_fails_rolls_back(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("rollback").await;
    // Make the audit write of user creation fail inside the database.
    match backend {
        Backend::Sqlite => {
            let pool = app.karen.store.sqlite_pool().unwrap();
            sqlx::query(
                "CREATE TRIGGER injected_failure BEFORE INSERT ON audit_events \
                 WHEN NEW.action = 'user.create' BEGIN SELECT RAISE(ABORT, 'injected'); END",
            )
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
            sqlx::raw_sql(
                "CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.action = 'user.create' THEN RAISE EXCEPTION 'injected'; END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER injected_failure BEFORE INSERT ON audit_events \
                 FOR EACH ROW EXECUTE FUNCTION injected_failure();",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
    }
    let refused = app
        .post(
            "/v1/users",
            &tenant.owner_token,
            json!({"email": "ghost@rollback.test", "password": PASSWORD}),
        )
        .await;
    assert_eq!(refused.status, 500, "{}", refused.text);
    let users = app.get("/v1/users", &tenant.owner_token).await;
    assert!(
        !users.expect(200).text.contains("ghost@rollback.test"),
        "the user was not created without its audit event"
    );
    app.login("rollback", "ghost@rollback.test", PASSWORD)
        .await
        .expect(401);
    assert!(verify(&app, &tenant).await.ok());
    app.stop().await;
}

async fn audit_rows_are_append_only(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("immutable").await;
    let t = tenant_literal(&app, &tenant);
    match backend {
        Backend::Sqlite => {
            let pool = app.karen.store.sqlite_pool().unwrap();
            for statement in [
                format!("UPDATE audit_events SET action = 'x.y' WHERE tenant_id = {t}"),
                format!("DELETE FROM audit_events WHERE tenant_id = {t}"),
            ] {
                let refused = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(pool)
                    .await;
                assert!(refused.is_err(), "{statement} must be refused");
            }
        }
        Backend::Postgres => {
            use sqlx::Connection as _;
            let database = app.postgres.as_ref().unwrap();
            // The application role holds no UPDATE or DELETE on audit rows.
            let mut conn = sqlx::PgConnection::connect(&database.app_url)
                .await
                .unwrap();
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("SELECT set_config('karen.tenant_id', $1, true)")
                .bind(tenant.id.to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
            let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert!(visible > 0);
            let update = sqlx::query("UPDATE audit_events SET action = 'x.y'")
                .execute(&mut *tx)
                .await;
            assert!(update.is_err(), "the app role cannot update audit rows");
            tx.rollback().await.unwrap();
            for statement in [
                "DELETE FROM audit_events",
                "DELETE FROM audit_checkpoints",
                "TRUNCATE audit_events",
            ] {
                let mut tx = conn.begin().await.unwrap();
                let refused = sqlx::query(statement).execute(&mut *tx).await;
                assert!(refused.is_err(), "{statement} as the app role");
                tx.rollback().await.unwrap();
            }
            // Nor may it purge an active tenant's trail through the owner's function.
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("SELECT set_config('karen.tenant_id', $1, true)")
                .bind(tenant.id.to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
            let purge = sqlx::query("SELECT karen_audit_purge_tenant($1, 'events')")
                .bind(tenant.id)
                .execute(&mut *tx)
                .await;
            assert!(purge.is_err(), "an active tenant's trail cannot be purged");
            tx.rollback().await.unwrap();
            conn.close().await.unwrap();
            // Even the owner is refused by the trigger.
            let mut owner = sqlx::PgConnection::connect(&database.owner_url)
                .await
                .unwrap();
            let refused = sqlx::query("UPDATE audit_events SET action = 'x.y'")
                .execute(&mut owner)
                .await;
            assert!(refused.is_err(), "the trigger refuses the owner's update");
            owner.close().await.unwrap();
        }
    }
    assert!(verify(&app, &tenant).await.ok());
    // Deleting the tenant removes its trail (the controlled path).
    let deleted = app
        .call(
            "DELETE",
            &format!("/v1/platform/tenants/{}", tenant.id),
            Some(&app.operator_key),
            None,
        )
        .await;
    assert!(matches!(deleted.status, 200 | 204), "{}", deleted.text);
    app.stop().await;
}

async fn concurrent_requests_keep_the_chain_linear(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("busy").await;
    let before = verify(&app, &tenant).await.events;
    let requests = (0..16).map(|n| {
        let app = &app;
        let token = tenant.owner_token.clone();
        async move {
            app.post(
                "/v1/users",
                &token,
                json!({"email": format!("c{n}-{}@busy.test", Uuid::now_v7().simple()), "password": PASSWORD}),
            )
            .await
            .expect(201);
        }
    });
    futures::future::join_all(requests).await;
    let report = verify(&app, &tenant).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, before + 16);
    assert_eq!(report.first_seq, Some(1));
    assert_eq!(report.last_seq, Some(i64::try_from(report.events).unwrap()));
    app.stop().await;
}

/// Reads of tenant content, searches included, are recorded (counts, never
/// the query text), by the reader and only in their tenant's trail.
async fn content_reads_and_searches_are_recorded(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("reader").await;
    let other = app.create_tenant("elsewhere").await;
    let (ada_id, ada) = app
        .create_user(&tenant, "ada@reader.test", &["member"])
        .await;
    let owner = tenant.owner_token.as_str();
    let memory = app
        .post(
            "/v1/memories",
            &ada,
            json!({"content": "The secret project is called Bluebird"}),
        )
        .await;
    let memory_id = memory.expect(201).str("id").to_owned();
    let markdown = "# Handbook\n\nBluebird launches in spring.";
    app.upload(owner, "?file_name=h.md", "text/markdown", markdown.into())
        .await
        .expect(201);
    app.get("/v1/memories", &ada).await.expect(200);
    app.get(&format!("/v1/memories/{memory_id}"), &ada)
        .await
        .expect(200);
    let found = app
        .post("/v1/memories/search", &ada, json!({"query": "Bluebird"}))
        .await;
    assert_eq!(found.expect(200).body.as_array().unwrap().len(), 1);
    let found = app
        .post("/v1/search", &ada, json!({"query": "Bluebird"}))
        .await;
    assert_eq!(
        found.expect(200).body["passages"].as_array().unwrap().len(),
        1
    );
    app.get("/v1/documents", &ada).await.expect(200);

    let trail = app.get("/v1/audit?limit=200", owner).await;
    let trail = trail.expect(200);
    let mine: Vec<&Value> = trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"]["id"] == ada_id.to_string())
        .collect();
    let actions: Vec<&str> = mine.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for wanted in [
        "memory.create",
        "memory.list",
        "memory.read",
        "memory.search",
        "search.query",
        "document.list",
    ] {
        assert!(
            actions.contains(&wanted),
            "{wanted} missing from {actions:?}"
        );
    }
    let search = mine.iter().find(|e| e["action"] == "search.query").unwrap();
    assert!(!search.to_string().contains("Bluebird"), "{search}");
    assert!(search["diff"].to_string().contains("passages"), "{search}");
    // Nothing of this reached the other tenant's trail.
    let theirs = app.get("/v1/audit?limit=200", &other.owner_token).await;
    assert!(!theirs.expect(200).text.contains(&ada_id.to_string()));
    app.stop().await;
}
