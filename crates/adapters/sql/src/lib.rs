//! Karen's relational store over SQLite (embedded) and PostgreSQL (scale-out):
//! one repository implementation, with the dialects differing only in their
//! migrations and in how a transaction is scoped to a tenant (row-level
//! security on PostgreSQL).

mod conn;
mod content;
mod encryption;
mod migrate;
mod platform;
mod repos;
mod rows;
pub mod schema;
mod tenant;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use karen_domain::ports::{PlatformTx, Store, TenantTx};
use karen_domain::{Error, Result, TenantId, TenantScope};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use crate::conn::PoolStats;
use crate::conn::{Pool, TxScope, map_sqlx};
pub use crate::encryption::Encryption;
pub use crate::migrate::{MigrationState, VerifyReport};

/// How to connect.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// `sqlite://path/to/karen.db` or `postgres://user@host/db`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before `service_unavailable`.
    pub acquire_timeout: Duration,
}

impl SqlOptions {
    /// Options for `url` with default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of `url`, or an error naming the accepted schemes.
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::invalid(
                Some("database.url"),
                "must start with sqlite:// (embedded) or postgres:// (scale-out)",
            ))
        }
    }
}

/// The relational store.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: Pool,
    /// Encryption at rest of tenant content (`None`: written plain).
    encryption: Option<Arc<Encryption>>,
}

impl SqlStore {
    /// Connects (and, for SQLite, creates the file and its directory).
    pub async fn connect(options: &SqlOptions) -> Result<Self> {
        let pool = match Backend::of_url(&options.url)? {
            Backend::Sqlite => {
                let connect = SqliteConnectOptions::from_str(&options.url)
                    .map_err(|e| {
                        Error::invalid(
                            Some("database.url"),
                            format!("not a usable SQLite URL: {e}"),
                        )
                    })?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    // Rows cross from sqlx's SQLite worker thread through a
                    // bounded channel; its default of 50 wakes the reader
                    // every 50 rows, which dominated long scans (audit
                    // verification) with thread switches.
                    .row_buffer_size(1024)
                    // Deleted content is overwritten with zeros, not left in
                    // free pages (an erased user's messages must not linger).
                    .pragma("secure_delete", "ON");
                if let Some(parent) = Path::new(connect.get_filename()).parent()
                    && !parent.as_os_str().is_empty()
                {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| Error::Unavailable {
                            component: "database",
                            detail: format!("cannot create {}: {e}", parent.display()),
                        })?;
                }
                // The writer connects first: it creates the file and switches it to WAL.
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect.clone())
                    .await
                    .map_err(map_sqlx)?;
                let reader = SqlitePoolOptions::new()
                    .max_connections(options.max_connections.max(1))
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect.read_only(true))
                    .await
                    .map_err(map_sqlx)?;
                Pool::Sqlite(conn::SqlitePools { writer, reader })
            }
            Backend::Postgres => {
                let connect = PgConnectOptions::from_str(&options.url).map_err(|e| {
                    Error::invalid(
                        Some("database.url"),
                        format!("not a usable PostgreSQL URL: {e}"),
                    )
                })?;
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections.max(1))
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await
                    .map_err(map_sqlx)?;
                Pool::Postgres(pool)
            }
        };
        Ok(Self {
            pool,
            encryption: None,
        })
    }

    /// Seals tenant content with per-tenant data keys under `encryption`
    /// (`None`: plain; encrypted rows then fail to read with a clear error).
    pub fn with_encryption(mut self, encryption: Option<Arc<Encryption>>) -> Self {
        self.encryption = encryption;
        self
    }

    /// The configured encryption, if any.
    pub fn encryption(&self) -> Option<&Arc<Encryption>> {
        self.encryption.as_ref()
    }

    /// Applies pending migrations (connect with the owner role on PostgreSQL).
    pub async fn migrate_up(&self) -> Result<()> {
        migrate::up(&self.pool).await
    }

    /// Reverts migrations newer than `target` (0 reverts everything).
    pub async fn migrate_down(&self, target: i64) -> Result<()> {
        migrate::down(&self.pool, target).await
    }

    /// Which migrations are applied.
    pub async fn migration_status(&self) -> Result<Vec<MigrationState>> {
        migrate::status(&self.pool).await
    }

    /// Refuses to serve on a schema older or newer than this binary.
    pub async fn ensure_schema_current(&self) -> Result<()> {
        let applied = migrate::applied_versions(&self.pool).await?;
        let known: Vec<i64> = migrate::embedded(&self.pool)
            .iter()
            .map(|m| m.version)
            .collect();
        if let Some(newer) = applied.iter().find(|v| !known.contains(v)) {
            return Err(Error::Unavailable {
                component: "database",
                detail: format!(
                    "the database schema has migration {newer}, which this binary does not know; run a newer karen"
                ),
            });
        }
        if let Some(missing) = known.iter().find(|v| !applied.contains(v)) {
            return Err(Error::Unavailable {
                component: "database",
                detail: format!(
                    "migration {missing} is not applied; run `karen migrate up` (with database.migration_url on PostgreSQL)"
                ),
            });
        }
        Ok(())
    }

    /// Runs up → down → up on this (empty, scratch) database and reports problems.
    pub async fn verify_migrations(&self) -> Result<VerifyReport> {
        migrate::verify_on(&self.pool).await
    }

    /// Runs `verify` on a fresh scratch database next to `url` (a temporary file
    /// for SQLite; a temporary database on the same PostgreSQL server, created and
    /// dropped with the owner connection), leaving the real database untouched.
    pub async fn verify_on_scratch(url: &str) -> Result<VerifyReport> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        match Backend::of_url(url)? {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("karen-verify-{suffix}"));
                let file = dir.join("scratch.db");
                let store =
                    Self::connect(&SqlOptions::new(format!("sqlite://{}", file.display()))).await?;
                let report = store.verify_migrations().await;
                store.close().await;
                let _ = tokio::fs::remove_dir_all(&dir).await;
                report
            }
            Backend::Postgres => {
                let admin = PgConnectOptions::from_str(url).map_err(|e| {
                    Error::invalid(
                        Some("database.migration_url"),
                        format!("not a usable PostgreSQL URL: {e}"),
                    )
                })?;
                let name = format!("karen_verify_{suffix}");
                let admin_pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(admin.clone())
                    .await
                    .map_err(map_sqlx)?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin_pool)
                    .await
                    .map_err(map_sqlx)?;
                let scratch = PgPoolOptions::new()
                    .max_connections(2)
                    .connect_with(admin.database(&name))
                    .await;
                let report = match scratch {
                    Ok(pool) => {
                        let store = Self {
                            pool: Pool::Postgres(pool),
                            encryption: None,
                        };
                        let report = store.verify_migrations().await;
                        store.close().await;
                        report
                    }
                    Err(e) => Err(map_sqlx(e)),
                };
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin_pool)
                .await
                .map_err(map_sqlx)?;
                admin_pool.close().await;
                report
            }
        }
    }

    /// PostgreSQL: creates (if needed) and grants the application role. SQLite: nothing to do.
    pub async fn grant_app_role(&self, role: &str) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(()),
            Pool::Postgres(pool) => migrate::grant_app_role(pool, role).await,
        }
    }

    /// PostgreSQL: refuses to serve as a role that would bypass row-level
    /// security (superuser, BYPASSRLS, or owner of any table).
    pub async fn ensure_serving_role_is_confined(&self) -> Result<()> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let row: (String, bool, bool, i64) = sqlx::query_as(
            "SELECT current_user::text, r.rolsuper, r.rolbypassrls, \
                    (SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user) \
               FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
        let (role, superuser, bypass, owned) = row;
        if superuser || bypass || owned > 0 {
            return Err(Error::invalid(
                Some("database.url"),
                format!(
                    "role '{role}' would bypass row-level security (superuser={superuser}, bypassrls={bypass}, owns {owned} tables); \
                     serve with the application role (database.app_role) and keep the owner for database.migration_url"
                ),
            ));
        }
        Ok(())
    }

    /// Tenancy-rule problems in the live schema (see [`schema::TENANT_TABLES`]).
    pub async fn tenancy_problems(&self) -> Result<Vec<String>> {
        schema::tenancy_problems(&self.pool).await
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The raw PostgreSQL pool (the application role): for adapters that keep
    /// derived data in the same database (the PostgreSQL full-text index), and
    /// for tests that probe row-level security directly.
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.pool {
            Pool::Postgres(pool) => Some(pool),
            Pool::Sqlite(_) => None,
        }
    }

    /// The raw SQLite pool, for tests that inspect the file directly.
    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.pool {
            Pool::Sqlite(pools) => Some(&pools.writer),
            Pool::Postgres(_) => None,
        }
    }

    /// The state of the connection pools (for the metrics).
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        self.pool.stats()
    }

    async fn open_tenant(&self, scope: TenantScope, write: bool) -> Result<Box<dyn TenantTx>> {
        let tenant: TenantId = scope.tenant_id();
        let tx = self.pool.begin(TxScope::Tenant(tenant), write).await?;
        Ok(Box::new(tenant::SqlTenantTx::new(
            tx,
            tenant,
            self.encryption.clone(),
        )))
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn platform(&self) -> Result<Box<dyn PlatformTx>> {
        let tx = self.pool.begin(TxScope::Platform, true).await?;
        Ok(Box::new(platform::SqlPlatformTx::new(tx)))
    }

    async fn tenant(&self, scope: TenantScope) -> Result<Box<dyn TenantTx>> {
        self.open_tenant(scope, true).await
    }

    async fn tenant_read(&self, scope: TenantScope) -> Result<Box<dyn TenantTx>> {
        self.open_tenant(scope, false).await
    }

    async fn ping(&self) -> Result<()> {
        self.pool.ping().await
    }

    async fn flush_deleted(&self) -> Result<()> {
        self.pool.flush_deleted().await
    }

    fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }
}
