//! Tenant lifecycle through the operator API: creation with an owner and a
//! namespace in every store, listing, changes, suspension, self-service signup,
//! and deletion that leaves nothing behind in any store.

use karen_domain::ports::{CacheKey, Store as _};
use karen_domain::{TenantId, TenantScope};
use karen_sql::schema::TENANT_TABLES;
use karen_testkit::{Backend, PASSWORD, TestApp, spawn, spawn_with};
use serde_json::json;
use sqlx::Connection as _;
use uuid::Uuid;

/// Rows of `tenant` in every tenant table plus its registry row, read past
/// row-level security (owner connection on PostgreSQL, the file on SQLite).
async fn remaining_rows(app: &TestApp, tenant: Uuid) -> Vec<(String, i64)> {
    let mut tables: Vec<(&str, &str)> = TENANT_TABLES.iter().map(|t| (*t, "tenant_id")).collect();
    tables.push(("tenants", "id"));
    let mut counts = Vec::new();
    for (table, column) in tables {
        let sql = format!("SELECT count(*) FROM {table} WHERE {column} = $1");
        let count: i64 = match &app.postgres {
            Some(database) => {
                let mut owner = sqlx::PgConnection::connect(&database.owner_url)
                    .await
                    .unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .fetch_one(&mut owner)
                    .await
                    .unwrap()
            }
            None => {
                let pool = app.karen.store.sqlite_pool().unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
        };
        counts.push((table.to_owned(), count));
    }
    counts
}

async fn deleting_a_tenant_leaves_nothing(backend: Backend) {
    // Rate-limit keys expire on their own within moments, which would make the
    // other tenant's key count below drift; their purge with the tenant is
    // checked by the limiter contract (`contract.rs`).
    let Some(app) = spawn_with(backend, |c| c.rate_limits.enabled = false).await else {
        return;
    };
    let doomed = app.create_tenant("doomed").await;
    let kept = app.create_tenant("kept").await;
    // Give the doomed tenant data in every table and in the cache.
    for tenant in [&doomed, &kept] {
        app.populate(tenant).await;
        let key = CacheKey::tenant(TenantId::from_uuid(tenant.id), "probe", "x");
        app.karen
            .counters
            .hit(&key, std::time::Duration::from_secs(600))
            .await
            .unwrap();
    }
    let kept_id = TenantId::from_uuid(kept.id);
    let kept_keys = app.karen.counters.tenant_key_count(kept_id).await.unwrap();
    assert!(kept_keys >= 1);
    let before = remaining_rows(&app, doomed.id).await;
    assert!(
        before.iter().all(|(_, n)| *n > 0),
        "every table holds data of the tenant first: {before:?}"
    );
    let id = TenantId::from_uuid(doomed.id);
    for namespace in &app.karen.namespaces {
        assert!(
            namespace.holds_data(id).await.unwrap(),
            "{} holds data first",
            namespace.name()
        );
    }

    let report = app
        .delete(
            &format!("/v1/platform/tenants/{}", doomed.id),
            &app.operator_key,
        )
        .await;
    report.expect(200);
    assert!(report.body["rows"]["users"].as_u64().unwrap() >= 2);

    let after = remaining_rows(&app, doomed.id).await;
    assert!(
        after.iter().all(|(_, n)| *n == 0),
        "rows remain after deletion: {after:?}"
    );
    for namespace in &app.karen.namespaces {
        assert!(
            !namespace.holds_data(id).await.unwrap(),
            "{} still holds data",
            namespace.name()
        );
    }
    // Its credentials are dead, its slug is free again, the other tenant is whole.
    app.get("/v1/me", &doomed.owner_token).await.expect(401);
    app.get(
        &format!("/v1/platform/tenants/{}", doomed.id),
        &app.operator_key,
    )
    .await
    .expect_problem(404, "not_found");
    app.delete(
        &format!("/v1/platform/tenants/{}", doomed.id),
        &app.operator_key,
    )
    .await
    .expect_problem(404, "not_found");
    assert!(
        remaining_rows(&app, kept.id)
            .await
            .iter()
            .all(|(_, n)| *n > 0)
    );
    assert_eq!(
        app.karen.counters.tenant_key_count(kept_id).await.unwrap(),
        kept_keys,
        "the other tenant's cache keys are untouched"
    );
    app.get("/v1/me", &kept.owner_token).await.expect(200);
    app.create_tenant("doomed").await;
    app.stop().await;
}

async fn operator_manages_tenants(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let op = app.operator_key.clone();
    // Without the operator key: refused.
    app.call("GET", "/v1/platform/tenants", None, None)
        .await
        .expect_problem(401, "unauthenticated");
    let body = json!({"slug": "acme", "name": "Acme", "owner_email": "boss@acme.test"});
    let created = app.post("/v1/platform/tenants", &op, body.clone()).await;
    created.expect(201);
    // No owner password given: the owner has none that works, and a setup
    // token (shown once) with which they set their own.
    assert!(created.body.get("initial_password").is_none());
    let setup = created.body["password_setup"]["token"].as_str().unwrap();
    assert!(setup.starts_with("kps_"), "{}", created.text);
    app.login("acme", "boss@acme.test", PASSWORD)
        .await
        .expect_problem(401, "invalid_credentials");
    app.call(
        "POST",
        "/v1/auth/password",
        None,
        Some(json!({"token": setup, "new_password": PASSWORD})),
    )
    .await
    .expect(204);
    app.login("acme", "boss@acme.test", PASSWORD)
        .await
        .expect(200);
    assert_eq!(created.body["owner"]["roles"], json!(["owner"]));
    assert_eq!(created.body["tenant"]["plan"], "free");
    app.post("/v1/platform/tenants", &op, body)
        .await
        .expect_problem(409, "conflict");
    app.post(
        "/v1/platform/tenants",
        &op,
        json!({"slug": "Bad Slug", "name": "x", "owner_email": "a@b.test"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    let id = created.uuid("/tenant/id");
    let changed = app
        .patch(
            &format!("/v1/platform/tenants/{id}"),
            &op,
            json!({"plan": "enterprise", "name": "Acme Corp"}),
        )
        .await;
    assert_eq!(changed.expect(200).str("plan"), "enterprise");
    for n in 0..3 {
        app.create_tenant(&format!("t{n}-corp")).await;
    }
    let first = app.get("/v1/platform/tenants?limit=2", &op).await;
    first.expect(200);
    assert_eq!(first.item_ids().len(), 2);
    let cursor = first.str("next_cursor").to_owned();
    let second = app
        .get(&format!("/v1/platform/tenants?limit=2&after={cursor}"), &op)
        .await;
    assert_eq!(second.expect(200).item_ids().len(), 2);
    assert!(second.body["next_cursor"].is_null());
    app.get("/v1/platform/tenants?limit=0", &op)
        .await
        .expect_problem(422, "validation_failed");
    app.get("/v1/platform/tenants?limit=abc", &op)
        .await
        .expect_problem(400, "bad_request");
    let suspended = app
        .post(
            &format!("/v1/platform/tenants/{id}/suspend"),
            &op,
            json!({}),
        )
        .await;
    assert_eq!(suspended.expect(200).str("status"), "suspended");
    app.post(
        &format!("/v1/platform/tenants/{}/suspend", Uuid::now_v7()),
        &op,
        json!({}),
    )
    .await
    .expect_problem(404, "not_found");
    app.stop().await;
}

async fn creation_provisions_every_store(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let id = TenantId::from_uuid(acme.id);
    if backend == Backend::Sqlite {
        assert!(
            app.data_dir
                .join("tenants")
                .join(acme.id.to_string())
                .is_dir(),
            "embedded tenant directory"
        );
    }
    // The owner exists in the tenant's own scope.
    let mut tx = app
        .karen
        .store
        .as_ref()
        .tenant_read(TenantScope::system(id, karen_domain::SystemReason::Cli))
        .await
        .unwrap();
    assert!(
        tx.users()
            .user_by_id(karen_domain::UserId::from_uuid(acme.owner_id))
            .await
            .unwrap()
            .is_some()
    );
    app.stop().await;
}

async fn self_service_signup_is_a_toggle(backend: Backend) {
    let signup = json!({"tenant_slug": "newco", "tenant_name": "NewCo", "email": "f@newco.test", "password": PASSWORD});
    let Some(app) = spawn(backend).await else {
        return;
    };
    app.call("POST", "/v1/signup", None, Some(signup.clone()))
        .await
        .expect_problem(404, "feature_disabled");
    app.stop().await;

    let Some(app) = spawn_with(backend, |c| c.features.self_signup = true).await else {
        return;
    };
    let created = app
        .call("POST", "/v1/signup", None, Some(signup.clone()))
        .await;
    created.expect(201);
    assert!(created.body.get("password_setup").is_none());
    app.login("newco", "f@newco.test", PASSWORD)
        .await
        .expect(200);
    app.call("POST", "/v1/signup", None, Some(signup))
        .await
        .expect_problem(409, "conflict");
    let weak = json!({"tenant_slug": "weak", "tenant_name": "W", "email": "f@w.test", "password": "short"});
    app.call("POST", "/v1/signup", None, Some(weak))
        .await
        .expect_problem(422, "validation_failed");
    app.stop().await;
}

on_both_backends!(
    deleting_a_tenant_leaves_nothing,
    operator_manages_tenants,
    creation_provisions_every_store,
    self_service_signup_is_a_toggle,
);
