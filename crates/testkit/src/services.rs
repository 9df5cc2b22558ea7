//! The real services the scale-out backend needs: a fresh PostgreSQL database
//! per test and a Redis key prefix per test. Missing services skip the test
//! locally and fail it when `CI` is set.

use std::time::Duration;

use sqlx::Connection as _;
use uuid::Uuid;

/// The application role tests serve through (not owner, not superuser).
pub const APP_ROLE: &str = "karen_app";

fn required() -> bool {
    std::env::var_os("CI").is_some()
}

fn unavailable<T>(what: &str, error: impl std::fmt::Display) -> Option<T> {
    if required() {
        panic!("{what} is required when CI is set, but is unavailable: {error}");
    }
    eprintln!("skipping: {what} unavailable ({error}); set CI=1 to make this a failure");
    None
}

fn admin_url() -> String {
    std::env::var("TESTKIT_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis URL for tests, if Redis answers.
pub async fn redis_url() -> Option<String> {
    let url =
        std::env::var("TESTKIT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let probe = async {
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(_)) => Some(url),
        Ok(Err(e)) => unavailable("Redis", e),
        Err(_) => unavailable("Redis", "timed out"),
    }
}

/// The Milvus endpoint for tests (`TESTKIT_MILVUS_URL`, default
/// `http://127.0.0.1:19530`; `scripts/milvus-lite.sh` starts one), if it
/// accepts connections.
pub async fn milvus_url() -> Option<String> {
    let url =
        std::env::var("TESTKIT_MILVUS_URL").unwrap_or_else(|_| "http://127.0.0.1:19530".into());
    let address = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let probe = tokio::net::TcpStream::connect(address);
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(_)) => Some(url),
        Ok(Err(e)) => unavailable("Milvus (run scripts/milvus-lite.sh)", e),
        Err(_) => unavailable("Milvus (run scripts/milvus-lite.sh)", "timed out"),
    }
}

/// Deletes every key under a test's prefix.
pub async fn delete_redis_prefix(prefix: &str) {
    let Some(url) = std::env::var("TESTKIT_REDIS_URL")
        .ok()
        .or_else(|| Some("redis://127.0.0.1:6379".into()))
    else {
        return;
    };
    let Ok(client) = redis::Client::open(url.as_str()) else {
        return;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<u64, _> = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await;
    }
}

/// A fresh database owned by the admin role, served through [`APP_ROLE`].
#[derive(Debug)]
pub struct PgDatabase {
    pub name: String,
    /// Owner connection (migrations).
    pub owner_url: String,
    /// Application-role connection (serving).
    pub app_url: String,
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

impl PgDatabase {
    /// Creates `karen_t_<uuid>`; `None` when PostgreSQL is unavailable locally.
    pub async fn create() -> Option<Self> {
        let admin = admin_url();
        let connect =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin)).await;
        let mut connection = match connect {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return unavailable("PostgreSQL", e),
            Err(_) => return unavailable("PostgreSQL", "timed out"),
        };
        let name = format!("karen_t_{}", Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .expect("create test database");
        let _ = connection.close().await;
        let owner_url = with_database(&admin, &name);
        let app_url = with_user(&owner_url, APP_ROLE);
        Some(Self {
            name,
            owner_url,
            app_url,
        })
    }

    /// Drops the database (closing any connection left).
    pub async fn drop_database(&self) {
        if let Ok(mut connection) = sqlx::PgConnection::connect(&admin_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut connection)
            .await;
            let _ = connection.close().await;
        }
    }
}
