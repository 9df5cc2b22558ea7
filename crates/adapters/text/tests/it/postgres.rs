//! The PostgreSQL index beyond the contract: row-level security probed with
//! raw SQL as the application role, the 0006 migrations on both dialects,
//! and what the database refuses.

use karen_domain::ports::TextIndex;
use karen_domain::{Error, TenantId};
use karen_sql::{SqlOptions, SqlStore};
use karen_text::PostgresTextIndex;
use sqlx::{Connection as _, PgConnection};

use crate::support::{Backend, entry, memory_key, run, temp_data_dir};

async fn count(connection: &mut PgConnection, sql: &'static str, tenant: Option<TenantId>) -> i64 {
    let query = sqlx::query_scalar::<_, i64>(sql);
    let query = match tenant {
        Some(tenant) => query.bind(tenant.as_uuid()),
        None => query,
    };
    query.fetch_one(connection).await.unwrap()
}

#[tokio::test]
async fn row_level_security_hides_other_tenants_rows_from_raw_sql() {
    run(Backend::Postgres, |f| async move {
        let (alpha, bravo) = (f.tenant().await, f.tenant().await);
        f.index
            .upsert(alpha, vec![entry(memory_key(), "alpha words")])
            .await
            .unwrap();
        f.index
            .upsert(
                bravo,
                vec![
                    entry(memory_key(), "bravo words"),
                    entry(memory_key(), "more bravo words"),
                ],
            )
            .await
            .unwrap();
        let database = f.postgres.as_ref().unwrap();
        // The role the index serves through cannot bypass the policies.
        let app_store = SqlStore::connect(&SqlOptions::new(database.app_url.clone()))
            .await
            .unwrap();
        app_store.ensure_serving_role_is_confined().await.unwrap();
        app_store.close().await;

        let mut conn = PgConnection::connect(&database.app_url).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('karen.tenant_id', $1, true)")
            .bind(alpha.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(count(&mut tx, "SELECT count(*) FROM text_entries", None).await, 1);
        assert_eq!(
            count(
                &mut tx,
                "SELECT count(*) FROM text_entries WHERE tenant_id = $1",
                Some(bravo)
            )
            .await,
            0
        );
        assert_eq!(
            count(
                &mut tx,
                "SELECT count(*) FROM text_entries WHERE tsv @@ plainto_tsquery('english', 'bravo')",
                None
            )
            .await,
            0
        );
        let updated = sqlx::query("UPDATE text_entries SET roles = '{x}' WHERE tenant_id = $1")
            .bind(bravo.as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(updated.rows_affected(), 0);
        let deleted = sqlx::query("DELETE FROM text_entries WHERE tenant_id = $1")
            .bind(bravo.as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(deleted.rows_affected(), 0);
        let insert = sqlx::query(
            "INSERT INTO text_entries (tenant_id, kind, id, tsv) \
             VALUES ($1, 'memory', gen_random_uuid(), to_tsvector('english', 'planted'))",
        )
        .bind(bravo.as_uuid())
        .execute(&mut *tx)
        .await;
        assert!(insert.is_err(), "a row for another tenant must be refused");
        tx.rollback().await.unwrap();

        // No tenant set (in a transaction, or outside one): no rows at all.
        let mut tx = conn.begin().await.unwrap();
        assert_eq!(count(&mut tx, "SELECT count(*) FROM text_entries", None).await, 0);
        tx.rollback().await.unwrap();
        assert_eq!(count(&mut conn, "SELECT count(*) FROM text_entries", None).await, 0);
        conn.close().await.unwrap();

        // The index's pooled connections keep no tenant after its transactions.
        for _ in 0..8 {
            let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM text_entries")
                .fetch_one(&database.app)
                .await
                .unwrap();
            assert_eq!(leaked, 0);
        }
        // B's rows are all still there (seen with B set).
        assert_eq!(f.index.status(bravo).await.unwrap().entries, 2);
    })
    .await;
}

#[tokio::test]
async fn entries_of_an_unknown_tenant_are_refused() {
    run(Backend::Postgres, |f| async move {
        let stranger = TenantId::generate();
        let result = f
            .index
            .upsert(stranger, vec![entry(memory_key(), "orphan")])
            .await;
        assert!(
            matches!(result, Err(Error::NotFound("tenant"))),
            "{result:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://karen_app@127.0.0.1:1/nowhere")
        .unwrap();
    let index = PostgresTextIndex::new(pool);
    let result = index.status(TenantId::generate()).await;
    assert!(
        matches!(result, Err(Error::Unavailable { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again_on_postgres() {
    run(Backend::Postgres, |f| async move {
        let database = f.postgres.as_ref().unwrap();
        let report = SqlStore::verify_on_scratch(&database.owner_url)
            .await
            .unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert!(report.migrations >= 6, "{report:?}");
        // The live (migrated) database: the table has forced RLS and a policy.
        let owner = SqlStore::connect(&SqlOptions::new(database.owner_url.clone()))
            .await
            .unwrap();
        assert!(owner.tenancy_problems().await.unwrap().is_empty());
        let status = owner.migration_status().await.unwrap();
        assert!(
            status
                .iter()
                .any(|m| m.description == "text_index" && m.applied),
            "{status:?}"
        );
        owner.close().await;
    })
    .await;
}

#[tokio::test]
async fn the_sqlite_migration_is_a_harmless_no_op() {
    let dir = temp_data_dir();
    let url = format!("sqlite://{}", dir.join("karen.db").display());
    let report = SqlStore::verify_on_scratch(&url).await.unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    let store = SqlStore::connect(&SqlOptions::new(url)).await.unwrap();
    store.migrate_up().await.unwrap();
    let status = store.migration_status().await.unwrap();
    assert!(status.iter().all(|m| m.applied), "{status:?}");
    store.migrate_down(5).await.unwrap();
    store.migrate_up().await.unwrap();
    assert!(store.tenancy_problems().await.unwrap().is_empty());
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
