//! Migrations: up → down → up on a scratch database gives the same schema on
//! both backends, every table with a tenant_id is a known tenant table (with
//! forced row-level security on PostgreSQL), and the check is not vacuous.

use karen_sql::{SqlOptions, SqlStore};
use karen_testkit::{Backend, spawn};

async fn up_down_up_is_identical(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let url = match &app.postgres {
        Some(database) => database.owner_url.clone(),
        None => format!(
            "sqlite://{}",
            app.data_dir.join("scratch-source.db").display()
        ),
    };
    let report = SqlStore::verify_on_scratch(&url).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.migrations >= 1 && report.objects > 10, "{report:?}");
    let status = app.karen.store.migration_status().await.unwrap();
    assert!(status.iter().all(|m| m.applied), "{status:?}");
    assert!(app.karen.store.tenancy_problems().await.unwrap().is_empty());
    app.stop().await;
}

async fn a_forgotten_tenant_table_is_reported(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let url = match &app.postgres {
        Some(database) => database.owner_url.clone(),
        None => format!("sqlite://{}", app.data_dir.join("karen.db").display()),
    };
    let owner = SqlStore::connect(&SqlOptions::new(url)).await.unwrap();
    let ddl = "CREATE TABLE rogue (tenant_id BLOB, note TEXT)";
    match (owner.sqlite_pool(), owner.postgres_pool()) {
        (Some(pool), _) => {
            sqlx::query(ddl).execute(pool).await.unwrap();
        }
        (_, Some(pool)) => {
            sqlx::query("CREATE TABLE rogue (tenant_id UUID, note TEXT)")
                .execute(pool)
                .await
                .unwrap();
        }
        _ => unreachable!(),
    }
    let problems = owner.tenancy_problems().await.unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("rogue") && p.contains("TENANT_TABLES")),
        "{problems:?}"
    );
    if backend == Backend::Postgres {
        assert!(
            problems
                .iter()
                .any(|p| p.contains("rogue") && p.contains("row-level security")),
            "{problems:?}"
        );
    }
    owner.close().await;
    app.stop().await;
}

on_both_backends!(
    up_down_up_is_identical,
    a_forgotten_tenant_table_is_reported
);
