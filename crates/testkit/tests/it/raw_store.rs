//! The raw bytes of a test server's database, read past the application:
//! what an attacker with the disk (SQLite) or the owner role (PostgreSQL)
//! would see.

use karen_testkit::TestApp;
use sqlx::Connection as _;

/// The SQLite file and its WAL, or every PostgreSQL table's rows as text (as
/// the owner, past row-level security); the PostgreSQL full-text index only
/// when `with_search_index` (it is derived search data, not encrypted).
pub(crate) async fn raw_database(app: &TestApp, with_search_index: bool) -> Vec<u8> {
    let mut haystack = Vec::new();
    match &app.postgres {
        None => {
            for name in ["karen.db", "karen.db-wal"] {
                if let Ok(bytes) = std::fs::read(app.data_dir.join(name)) {
                    haystack.extend(bytes);
                }
            }
        }
        Some(database) => {
            let mut owner = sqlx::PgConnection::connect(&database.owner_url)
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
                 AND tablename <> '_sqlx_migrations'",
            )
            .fetch_all(&mut owner)
            .await
            .unwrap();
            for table in tables {
                if table == "text_entries" && !with_search_index {
                    continue;
                }
                let sql = format!("SELECT t::text FROM {table} t");
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut owner)
                    .await
                    .unwrap();
                for row in rows {
                    haystack.extend(row.into_bytes());
                }
            }
        }
    }
    haystack
}

/// Every file under `dir` (the embedded search indexes), concatenated.
pub(crate) fn raw_files(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(raw_files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}
