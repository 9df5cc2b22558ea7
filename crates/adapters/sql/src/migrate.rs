//! Reversible migrations for both dialects (embedded at build time), the
//! application role's grants on PostgreSQL, and `verify`: up → down → up on a
//! scratch database, comparing schemas.

use std::borrow::Cow;

use karen_domain::Error;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Executor, Row as _, SqlSafeStr};

use crate::conn::{Pool, map_sqlx};
use crate::schema;

/// One migration as embedded in the binary.
pub(crate) struct EmbeddedMigration {
    pub version: i64,
    pub description: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The state of one migration in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub version: i64,
    pub description: &'static str,
    pub applied: bool,
}

pub(crate) fn embedded(pool: &Pool) -> &'static [EmbeddedMigration] {
    match pool {
        Pool::Sqlite(_) => SQLITE,
        Pool::Postgres(_) => POSTGRES,
    }
}

fn migrator(pool: &Pool) -> Migrator {
    let migrations = embedded(pool)
        .iter()
        .flat_map(|m| {
            [
                Migration::new(
                    m.version,
                    Cow::Borrowed(m.description),
                    MigrationType::ReversibleUp,
                    m.up.into_sql_str(),
                    false,
                ),
                Migration::new(
                    m.version,
                    Cow::Borrowed(m.description),
                    MigrationType::ReversibleDown,
                    m.down.into_sql_str(),
                    false,
                ),
            ]
        })
        .collect();
    Migrator::with_migrations(migrations)
}

fn map_migrate(error: sqlx::migrate::MigrateError) -> Error {
    match error {
        sqlx::migrate::MigrateError::Execute(e) => map_sqlx(e),
        other => Error::internal(format!("migration failed: {other}")),
    }
}

/// Applies every pending migration.
pub(crate) async fn up(pool: &Pool) -> Result<(), Error> {
    let migrator = migrator(pool);
    match pool {
        Pool::Sqlite(p) => migrator.run(&p.writer).await,
        Pool::Postgres(p) => migrator.run(p).await,
    }
    .map_err(map_migrate)
}

/// Reverts every migration newer than `target` (0 reverts all).
pub(crate) async fn down(pool: &Pool, target: i64) -> Result<(), Error> {
    let migrator = migrator(pool);
    match pool {
        Pool::Sqlite(p) => migrator.undo(&p.writer, target).await,
        Pool::Postgres(p) => migrator.undo(p, target).await,
    }
    .map_err(map_migrate)
}

/// Versions recorded as applied in the database (including any this binary does not know).
pub(crate) async fn applied_versions(pool: &Pool) -> Result<Vec<i64>, Error> {
    let sql = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
    match pool {
        Pool::Sqlite(p) => p
            .writer
            .fetch_all(sql)
            .await
            .map(|rows| rows.iter().map(|r| r.get::<i64, _>(0)).collect()),
        Pool::Postgres(p) => p
            .fetch_all(sql)
            .await
            .map(|rows| rows.iter().map(|r| r.get::<i64, _>(0)).collect()),
    }
    .or_else(|e| match &e {
        // No migrations table yet: nothing applied.
        sqlx::Error::Database(db) if db.message().contains("_sqlx_migrations") => Ok(Vec::new()),
        _ => Err(map_sqlx(e)),
    })
}

/// Which migrations are applied.
pub(crate) async fn status(pool: &Pool) -> Result<Vec<MigrationState>, Error> {
    let applied = applied_versions(pool).await?;
    Ok(embedded(pool)
        .iter()
        .map(|m| MigrationState {
            version: m.version,
            description: m.description,
            applied: applied.contains(&m.version),
        })
        .collect())
}

/// Grants the application role what serving needs, and nothing more: data
/// access on every table (row-level security still applies, as the role is
/// neither owner nor superuser) and read access to the migration history.
/// Creates the role (LOGIN, no password) if it does not exist yet.
pub(crate) async fn grant_app_role(pool: &sqlx::PgPool, role: &str) -> Result<(), Error> {
    let quoted = quote_role(role)?;
    let mut conn = pool.acquire().await.map_err(map_sqlx)?;
    let current: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    if current == role {
        return Err(Error::invalid(
            Some("database.app_role"),
            format!(
                "the application role '{role}' must not be the migration (owner) role; use another role for database.url"
            ),
        ));
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    if !exists {
        let create =
            format!("CREATE ROLE {quoted} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE");
        match conn.execute(sqlx::AssertSqlSafe(create)).await {
            Ok(_) => {}
            // Another migrator created it concurrently: "duplicate object", or a
            // unique violation on pg_authid when both inserts raced.
            Err(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("42710" | "23505")) => {}
            Err(e) => {
                return Err(Error::invalid(
                    Some("database.app_role"),
                    format!(
                        "role '{role}' does not exist and could not be created ({e}); create it with: CREATE ROLE {role} LOGIN PASSWORD '…'"
                    ),
                ));
            }
        }
    }
    let grants = [
        format!("GRANT USAGE ON SCHEMA public TO {quoted}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}"),
        format!("REVOKE INSERT, UPDATE, DELETE ON _sqlx_migrations FROM {quoted}"),
        // The audit trail is append-only for the application (a trigger refuses
        // changes too); removal goes through the owner's guarded functions.
        format!(
            "REVOKE UPDATE, DELETE, TRUNCATE ON audit_events, audit_checkpoints, \
             platform_audit_events, platform_audit_checkpoints FROM {quoted}"
        ),
        // Migration 0015 revokes these from PUBLIC: only this role may call them.
        format!(
            "GRANT EXECUTE ON FUNCTION karen_audit_drop_prefix(UUID, BIGINT), \
             karen_audit_purge_tenant(UUID, TEXT), \
             karen_audit_redact(UUID, BIGINT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT) TO {quoted}"
        ),
    ];
    for grant in grants {
        conn.execute(sqlx::AssertSqlSafe(grant))
            .await
            .map_err(map_sqlx)?;
    }
    Ok(())
}

/// Quotes a role name after checking it is a plain identifier.
fn quote_role(role: &str) -> Result<String, Error> {
    let ok = !role.is_empty()
        && role.len() <= 63
        && role.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(Error::invalid(
            Some("database.app_role"),
            format!("'{role}' is not a plain role name (a-z, 0-9, _; at most 63 characters)"),
        ));
    }
    Ok(format!("\"{role}\""))
}

/// The outcome of `verify`.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub migrations: usize,
    pub objects: usize,
    pub problems: Vec<String>,
}

/// Applies up → down → up on the scratch database behind `pool` and reports
/// every difference: objects left after down, a schema that differs after the
/// second up, and (PostgreSQL) tenant tables without forced row-level security.
pub(crate) async fn verify_on(pool: &Pool) -> Result<VerifyReport, Error> {
    let mut problems = Vec::new();
    let before = schema::dump(pool).await?;
    if !before.is_empty() {
        return Err(Error::invalid(
            None,
            "the scratch database for verify must be empty",
        ));
    }
    up(pool).await?;
    let first = schema::dump(pool).await?;
    down(pool, 0).await?;
    let after_down = schema::dump(pool).await?;
    for object in &after_down {
        problems.push(format!("left behind after down: {object}"));
    }
    up(pool).await?;
    let second = schema::dump(pool).await?;
    for object in first.iter().filter(|o| !second.contains(o)) {
        problems.push(format!("missing after second up: {object}"));
    }
    for object in second.iter().filter(|o| !first.contains(o)) {
        problems.push(format!("new after second up: {object}"));
    }
    problems.extend(schema::tenancy_problems(pool).await?);
    Ok(VerifyReport {
        migrations: embedded(pool).len(),
        objects: first.len(),
        problems,
    })
}
