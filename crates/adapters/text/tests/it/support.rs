//! What every test needs: an index of either backend on fresh storage (a
//! temporary data dir, or a fresh PostgreSQL database migrated by Karen's
//! own migration code and served through the application role), tenants,
//! entries and filters.
//!
//! PostgreSQL tests fail, never skip, when the server is unreachable.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use karen_domain::ports::{EntryAccess, EntryKey, EntryKind, SearchFilter, TextEntry, TextIndex};
use karen_domain::{RoleName, TenantId, UserId};
use karen_files::TenantDirectories;
use karen_sql::{SqlOptions, SqlStore};
use karen_text::{EmbeddedTextIndex, EmbeddedTextOptions, PostgresTextIndex};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

/// The application role (not owner, not superuser), as in karen-testkit.
pub const APP_ROLE: &str = "karen_app";

/// Which implementation a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Postgres,
}

/// A fresh PostgreSQL database for one test.
pub struct PgDatabase {
    pub name: String,
    /// The owner (superuser `postgres`): migrations and test setup.
    pub owner: PgPool,
    /// The application role: what the index serves through.
    pub app: PgPool,
    pub owner_url: String,
    pub app_url: String,
}

fn admin_url() -> String {
    std::env::var("TESTKIT_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{base}/{database}")
}

fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

async fn admin_connection() -> PgConnection {
    let admin = admin_url();
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin)).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => panic!("PostgreSQL at {admin} is required for these tests: {e}"),
        Err(_) => panic!("PostgreSQL at {admin} is required for these tests: timed out"),
    }
}

impl PgDatabase {
    /// Creates `karen_text_<uuid>`, migrates it with karen-sql as the owner,
    /// grants the application role, and connects as both.
    pub async fn create() -> Self {
        let mut admin = admin_connection().await;
        let name = format!("karen_text_{}", Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let owner_url = with_database(&admin_url(), &name);
        let app_url = with_user(&owner_url, APP_ROLE);
        let store = SqlStore::connect(&SqlOptions::new(owner_url.clone()))
            .await
            .expect("connect as owner");
        store.migrate_up().await.expect("migrations apply");
        store
            .grant_app_role(APP_ROLE)
            .await
            .expect("grant app role");
        store.close().await;
        let owner = PgPoolOptions::new()
            .max_connections(2)
            .connect(&owner_url)
            .await
            .expect("owner pool");
        let app = PgPoolOptions::new()
            .max_connections(4)
            .connect(&app_url)
            .await
            .expect("application-role pool");
        Self {
            name,
            owner,
            app,
            owner_url,
            app_url,
        }
    }

    /// Registers a tenant (text_entries references tenants). The owner is a
    /// superuser here, which row-level security does not apply to.
    pub async fn register_tenant(&self, tenant: TenantId) {
        sqlx::query(
            "INSERT INTO tenants (id, slug, name, plan, status, settings, created_at, updated_at) \
             VALUES ($1, $2, 'Test tenant', 'free', 'active', '{}'::jsonb, 0, 0)",
        )
        .bind(tenant.as_uuid())
        .bind(format!("t-{}", tenant.as_uuid().simple()))
        .execute(&self.owner)
        .await
        .expect("register tenant");
    }

    /// Closes the pools and drops the database.
    pub async fn drop_database(&self) {
        self.app.close().await;
        self.owner.close().await;
        let mut admin = admin_connection().await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
    }
}

/// A temporary data directory, removed by [`Fixture::cleanup`].
pub fn temp_data_dir() -> PathBuf {
    std::env::temp_dir().join(format!("karen-text-test-{}", Uuid::now_v7().simple()))
}

/// An index on fresh storage.
pub struct Fixture {
    pub index: Arc<dyn TextIndex>,
    pub data_dir: Option<PathBuf>,
    pub postgres: Option<PgDatabase>,
}

impl Fixture {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Embedded => {
                let data_dir = temp_data_dir();
                let index = EmbeddedTextIndex::new(
                    TenantDirectories::new(&data_dir),
                    EmbeddedTextOptions::default(),
                );
                Self {
                    index: Arc::new(index),
                    data_dir: Some(data_dir),
                    postgres: None,
                }
            }
            Backend::Postgres => {
                let database = PgDatabase::create().await;
                let index = PostgresTextIndex::new(database.app.clone());
                Self {
                    index: Arc::new(index),
                    data_dir: None,
                    postgres: Some(database),
                }
            }
        }
    }

    /// A new tenant, known to the backend.
    pub async fn tenant(&self) -> TenantId {
        let tenant = TenantId::generate();
        if let Some(database) = &self.postgres {
            database.register_tenant(tenant).await;
        }
        tenant
    }

    pub async fn cleanup(&self) {
        if let Some(database) = &self.postgres {
            database.drop_database().await;
        }
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs `test` on a fresh fixture of `backend`, then cleans up, then
/// re-raises the test's panic if it failed.
pub async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Arc<Fixture>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fixture = Arc::new(Fixture::new(backend).await);
    let outcome = tokio::spawn(test(fixture.clone())).await;
    fixture.cleanup().await;
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("test task failed: {error}"),
        }
    }
}

pub fn memory_key() -> EntryKey {
    EntryKey::new(EntryKind::Memory, Uuid::now_v7())
}

pub fn chunk_key() -> EntryKey {
    EntryKey::new(EntryKind::Chunk, Uuid::now_v7())
}

/// An entry the whole tenant may see.
pub fn entry(key: EntryKey, text: &str) -> TextEntry {
    TextEntry {
        key,
        access: EntryAccess::default(),
        text: text.to_owned(),
    }
}

/// A private entry of `owner`.
pub fn private(key: EntryKey, owner: UserId, text: &str) -> TextEntry {
    TextEntry {
        key,
        access: EntryAccess {
            owner: Some(owner),
            ..EntryAccess::default()
        },
        text: text.to_owned(),
    }
}

/// A chunk of a document restricted to `roles`.
pub fn restricted(key: EntryKey, roles: &[&str], text: &str) -> TextEntry {
    TextEntry {
        key,
        access: EntryAccess {
            owner: None,
            roles: roles.iter().map(|r| role(r)).collect(),
            document: Some(Uuid::now_v7()),
        },
        text: text.to_owned(),
    }
}

pub fn role(name: &str) -> RoleName {
    RoleName::parse(name).expect("valid role name")
}

/// A searcher with no roles, any kind.
pub fn anyone() -> SearchFilter {
    SearchFilter {
        kinds: Vec::new(),
        user: UserId::generate(),
        roles: Vec::new(),
    }
}

pub fn user_filter(user: UserId, roles: &[&str]) -> SearchFilter {
    SearchFilter {
        kinds: Vec::new(),
        user,
        roles: roles.iter().map(|r| role(r)).collect(),
    }
}

/// The keys of a search, best first.
pub async fn search_keys(
    index: &dyn TextIndex,
    tenant: TenantId,
    query: &str,
    filter: &SearchFilter,
) -> Vec<EntryKey> {
    index
        .search(tenant, query, 20, filter)
        .await
        .unwrap_or_else(|e| panic!("search {query:?} failed: {e}"))
        .into_iter()
        .map(|hit| hit.key)
        .collect()
}
