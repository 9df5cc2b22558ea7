//! PostgreSQL row-level security, probed directly as the application role:
//! with tenant A set, no row of tenant B is visible or writable in any table;
//! with no tenant set, no row at all; and Karen refuses to serve as a role
//! that would bypass the policies.

use std::sync::Arc;

use karen_sql::schema::{PLATFORM_TABLES, TENANT_TABLES};
use karen_testkit::{Backend, spawn};
use sqlx::{Connection as _, PgConnection};
use uuid::Uuid;

async fn count(connection: &mut PgConnection, sql: String, tenant: Option<Uuid>) -> i64 {
    let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
    let query = match tenant {
        Some(t) => query.bind(t),
        None => query,
    };
    query.fetch_one(connection).await.unwrap()
}

async fn set_scope(connection: &mut PgConnection, name: &str, value: &str) {
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(name)
        .bind(value)
        .execute(connection)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_sees_only_the_tenant_it_set() {
    let Some(app) = spawn(Backend::Postgres).await else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let bravo = app.create_tenant("bravo").await;
    app.populate(&alpha).await;
    app.populate(&bravo).await;
    let database = app.postgres.as_ref().unwrap();
    let mut conn = PgConnection::connect(&database.app_url).await.unwrap();

    // Tenant A set for the transaction: nothing of B, everything visible is A's.
    let mut tx = conn.begin().await.unwrap();
    set_scope(&mut tx, "karen.tenant_id", &alpha.id.to_string()).await;
    for table in TENANT_TABLES {
        let foreign = count(
            &mut tx,
            format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"),
            Some(bravo.id),
        )
        .await;
        let all = count(&mut tx, format!("SELECT count(*) FROM {table}"), None).await;
        let own = count(
            &mut tx,
            format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"),
            Some(alpha.id),
        )
        .await;
        assert_eq!(foreign, 0, "{table}: B's rows visible to A");
        assert!(
            own > 0 && all == own,
            "{table}: A sees {all} rows of which {own} are its own"
        );
    }
    assert_eq!(
        count(&mut tx, "SELECT count(*) FROM tenants".into(), None).await,
        1,
        "only its own registry row"
    );
    for table in ["operator_keys", "signing_keys"] {
        assert_eq!(
            count(&mut tx, format!("SELECT count(*) FROM {table}"), None).await,
            0,
            "{table} visible to a tenant"
        );
    }
    // Writes aimed at B change nothing or are refused.
    let updated = sqlx::query("UPDATE users SET display_name = 'pwned' WHERE tenant_id = $1")
        .bind(bravo.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    let deleted = sqlx::query("DELETE FROM user_roles WHERE tenant_id = $1")
        .bind(bravo.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    let insert = sqlx::query(
        "INSERT INTO custom_roles (tenant_id, name, permissions, created_at, updated_at) VALUES ($1, 'evil', '[]', 0, 0)",
    )
    .bind(bravo.id)
    .execute(&mut *tx)
    .await;
    assert!(
        insert.is_err(),
        "row-level security must refuse a row for another tenant"
    );
    tx.rollback().await.unwrap();

    // The same pooled connection afterwards, with nothing set: no rows anywhere.
    let mut tx = conn.begin().await.unwrap();
    for table in TENANT_TABLES.iter().chain(PLATFORM_TABLES) {
        assert_eq!(
            count(&mut tx, format!("SELECT count(*) FROM {table}"), None).await,
            0,
            "{table} visible with no tenant set"
        );
    }
    tx.rollback().await.unwrap();
    // Outside any transaction, too.
    for table in TENANT_TABLES.iter().chain(PLATFORM_TABLES) {
        assert_eq!(
            count(&mut conn, format!("SELECT count(*) FROM {table}"), None).await,
            0,
            "{table} visible outside a transaction"
        );
    }
    // Platform scope sees the registry but no tenant's data.
    let mut tx = conn.begin().await.unwrap();
    set_scope(&mut tx, "karen.scope", "platform").await;
    assert_eq!(
        count(&mut tx, "SELECT count(*) FROM tenants".into(), None).await,
        2
    );
    for table in TENANT_TABLES {
        assert_eq!(
            count(&mut tx, format!("SELECT count(*) FROM {table}"), None).await,
            0,
            "{table} visible in platform scope"
        );
    }
    tx.rollback().await.unwrap();
    conn.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_is_confined_and_karen_refuses_a_bypassing_one() {
    let Some(app) = spawn(Backend::Postgres).await else {
        return;
    };
    let database = app.postgres.as_ref().unwrap();
    let mut conn = PgConnection::connect(&database.app_url).await.unwrap();
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!superuser && !bypass);
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(owned, 0);
    // The app role cannot rewrite the migration history or truncate.
    assert!(
        sqlx::query("DELETE FROM _sqlx_migrations")
            .execute(&mut conn)
            .await
            .is_err()
    );
    assert!(
        sqlx::query("TRUNCATE users")
            .execute(&mut conn)
            .await
            .is_err()
    );
    conn.close().await.unwrap();
    assert!(app.karen.store.tenancy_problems().await.unwrap().is_empty());

    // Serving with the owner (a superuser here) is refused at start.
    let mut config = app.karen.config.clone();
    config.database.url = Some(database.owner_url.clone());
    config.database.migration_url = None;
    let refused = karen::Karen::open(config, Arc::new(karen_domain::SystemClock)).await;
    let message = format!(
        "{:#}",
        refused.err().expect("serving as the owner must be refused")
    );
    assert!(message.contains("bypass row-level security"), "{message}");
    app.stop().await;
}
