//! The one place where the two SQL dialects meet. Repositories write each
//! statement once (PostgreSQL-style `$n` parameters, which SQLite accepts too)
//! and run it through these wrappers; only beginning a scoped transaction and
//! the migrations differ between backends.

use karen_domain::{Error, TenantId};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query as SqlxQuery;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Decode, Encode, Postgres, Row as _, Sqlite, Transaction, Type};
use tracing::Instrument as _;

/// SQLite allows one writer at a time. Writes go through a one-connection pool,
/// so writers queue in the pool instead of spinning in SQLite's busy handler;
/// reads (WAL) run concurrently on their own read-only connections.
#[derive(Clone, Debug)]
pub(crate) struct SqlitePools {
    pub writer: sqlx::SqlitePool,
    pub reader: sqlx::SqlitePool,
}

/// A connection pool of either backend.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePools),
    Postgres(sqlx::PgPool),
}

/// A value that both backends can bind.
pub(crate) trait Param:
    for<'q> Encode<'q, Sqlite> + Type<Sqlite> + for<'q> Encode<'q, Postgres> + Type<Postgres> + Send
{
}
impl<T> Param for T where
    T: for<'q> Encode<'q, Sqlite>
        + Type<Sqlite>
        + for<'q> Encode<'q, Postgres>
        + Type<Postgres>
        + Send
{
}

/// A value that both backends can decode.
pub(crate) trait Column:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}
impl<T> Column for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A statement with its bound parameters, for the backend of the transaction
/// that made it, and its kind (`select`, `insert`…) for the metrics.
pub(crate) enum Query {
    Sqlite(SqlxQuery<'static, Sqlite, SqliteArguments>, &'static str),
    Postgres(SqlxQuery<'static, Postgres, PgArguments>, &'static str),
}

impl Query {
    /// The statement's kind.
    fn verb(&self) -> &'static str {
        match self {
            Query::Sqlite(_, verb) | Query::Postgres(_, verb) => verb,
        }
    }

    /// Binds the next `$n` parameter.
    pub(crate) fn bind<T: Param>(self, value: T) -> Self {
        match self {
            Query::Sqlite(q, verb) => Query::Sqlite(q.bind(value), verb),
            Query::Postgres(q, verb) => Query::Postgres(q.bind(value), verb),
        }
    }
}

/// A result row of either backend.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    /// Reads column `name`.
    pub(crate) fn get<T: Column>(&self, name: &str) -> Result<T, Error> {
        match self {
            Row::Sqlite(row) => row.try_get(name),
            Row::Postgres(row) => row.try_get(name),
        }
        .map_err(|e| Error::internal(format!("reading column {name}: {e}")))
    }
}

/// An open transaction of either backend. Dropped without `commit`, it rolls back.
/// Each holds its `db.transaction` span, which ends when the transaction does.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>, tracing::Span),
    Postgres(Transaction<'static, Postgres>, tracing::Span),
}

/// What a transaction may touch, set on PostgreSQL as transaction-local settings
/// that the row-level-security policies read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TxScope {
    Platform,
    Tenant(TenantId),
}

impl Pool {
    /// Begins a transaction bound to `scope`. On PostgreSQL the scope is set with
    /// `set_config(…, true)`, so it ends with the transaction and a pooled
    /// connection never carries it over. On SQLite writers take the lock up front
    /// (`BEGIN IMMEDIATE`) so two transactions never deadlock upgrading a read.
    pub(crate) async fn begin(&self, scope: TxScope, write: bool) -> Result<Tx, Error> {
        let span = tracing::info_span!(
            "db.transaction",
            db.system = self.system(),
            db.transaction.write = write,
            tenant_id = tracing::field::Empty,
        );
        if let TxScope::Tenant(tenant) = scope {
            span.record("tenant_id", tracing::field::display(tenant));
        }
        self.begin_in(scope, write, span.clone())
            .instrument(span)
            .await
    }

    /// `sqlite` or `postgresql` (the OpenTelemetry `db.system` value).
    fn system(&self) -> &'static str {
        match self {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgresql",
        }
    }

    async fn begin_in(
        &self,
        scope: TxScope,
        write: bool,
        span: tracing::Span,
    ) -> Result<Tx, Error> {
        let started = std::time::Instant::now();
        let acquired = |pool: &'static str| {
            metrics::histogram!(names::POOL_ACQUIRE, "pool" => pool)
                .record(started.elapsed().as_secs_f64());
        };
        match self {
            Pool::Sqlite(pools) => {
                let tx = if write {
                    let tx = pools.writer.begin_with("BEGIN IMMEDIATE").await;
                    acquired("sqlite_writer");
                    tx
                } else {
                    let tx = pools.reader.begin().await;
                    acquired("sqlite_reader");
                    tx
                };
                Ok(Tx::Sqlite(tx.map_err(map_sqlx)?, span))
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(map_sqlx)?;
                acquired("postgres");
                let (name, value) = match scope {
                    TxScope::Platform => ("karen.scope", "platform".to_owned()),
                    TxScope::Tenant(tenant) => ("karen.tenant_id", tenant.to_string()),
                };
                sqlx::query("SELECT set_config($1, $2, true)")
                    .bind(name)
                    .bind(value)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
                Ok(Tx::Postgres(tx, span))
            }
        }
    }

    /// `SELECT 1`.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        match self {
            Pool::Sqlite(pools) => sqlx::query("SELECT 1")
                .execute(&pools.reader)
                .await
                .map(drop),
            Pool::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
        .map_err(map_sqlx)
    }

    /// SQLite: moves the write-ahead log into the database and truncates it,
    /// so no frame written before a deletion keeps the deleted bytes.
    /// PostgreSQL: nothing (dead tuples are the server's to reclaim).
    pub(crate) async fn flush_deleted(&self) -> Result<(), Error> {
        match self {
            Pool::Sqlite(pools) => sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&pools.writer)
                .await
                .map(drop)
                .map_err(map_sqlx),
            Pool::Postgres(_) => Ok(()),
        }
    }

    /// Closes every connection.
    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite(pools) => {
                pools.reader.close().await;
                pools.writer.close().await;
            }
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// A connection pool's state, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// `sqlite_writer`, `sqlite_reader` or `postgres`.
    pub name: &'static str,
    /// Open connections.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

impl Pool {
    /// The state of each pool.
    pub(crate) fn stats(&self) -> Vec<PoolStats> {
        fn of<DB: sqlx::Database>(name: &'static str, pool: &sqlx::Pool<DB>) -> PoolStats {
            PoolStats {
                name,
                size: pool.size(),
                idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
                max: pool.options().get_max_connections(),
            }
        }
        match self {
            Pool::Sqlite(pools) => vec![
                of("sqlite_writer", &pools.writer),
                of("sqlite_reader", &pools.reader),
            ],
            Pool::Postgres(pool) => vec![of("postgres", pool)],
        }
    }
}

impl Tx {
    /// Starts a statement for this transaction's backend.
    pub(crate) fn query(&self, sql: &'static str) -> Query {
        match self {
            Tx::Sqlite(..) => Query::Sqlite(sqlx::query(sql), verb_of(sql)),
            Tx::Postgres(..) => Query::Postgres(sqlx::query(sql), verb_of(sql)),
        }
    }

    async fn execute_raw(&mut self, query: Query) -> Result<u64, sqlx::Error> {
        let _timer = QueryTimer::start(query.verb());
        match (self, query) {
            (Tx::Sqlite(tx, _), Query::Sqlite(q, _)) => {
                q.execute(&mut **tx).await.map(|r| r.rows_affected())
            }
            (Tx::Postgres(tx, _), Query::Postgres(q, _)) => {
                q.execute(&mut **tx).await.map(|r| r.rows_affected())
            }
            _ => Err(sqlx::Error::Protocol(
                "statement built for another backend".into(),
            )),
        }
    }

    /// Runs a statement; returns the number of rows it changed.
    pub(crate) async fn execute(&mut self, query: Query) -> Result<u64, Error> {
        self.execute_raw(query).await.map_err(map_sqlx)
    }

    /// Runs a statement whose unique-constraint violation means `conflict`.
    pub(crate) async fn execute_unique(
        &mut self,
        query: Query,
        conflict: &str,
    ) -> Result<u64, Error> {
        self.execute_raw(query).await.map_err(|error| match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict(conflict.to_owned())
            }
            _ => map_sqlx(error),
        })
    }

    /// Runs a statement that returns at most one row.
    pub(crate) async fn fetch_optional(&mut self, query: Query) -> Result<Option<Row>, Error> {
        let _timer = QueryTimer::start(query.verb());
        match (self, query) {
            (Tx::Sqlite(tx, _), Query::Sqlite(q, _)) => q
                .fetch_optional(&mut **tx)
                .await
                .map(|r| r.map(Row::Sqlite))
                .map_err(map_sqlx),
            (Tx::Postgres(tx, _), Query::Postgres(q, _)) => q
                .fetch_optional(&mut **tx)
                .await
                .map(|r| r.map(Row::Postgres))
                .map_err(map_sqlx),
            _ => Err(mismatch()),
        }
    }

    /// Runs a statement that returns exactly one row.
    pub(crate) async fn fetch_one(&mut self, query: Query) -> Result<Row, Error> {
        self.fetch_optional(query)
            .await?
            .ok_or_else(|| Error::internal("statement returned no row"))
    }

    /// Runs a statement and collects its rows.
    pub(crate) async fn fetch_all(&mut self, query: Query) -> Result<Vec<Row>, Error> {
        let _timer = QueryTimer::start(query.verb());
        match (self, query) {
            (Tx::Sqlite(tx, _), Query::Sqlite(q, _)) => q
                .fetch_all(&mut **tx)
                .await
                .map(|rows| rows.into_iter().map(Row::Sqlite).collect())
                .map_err(map_sqlx),
            (Tx::Postgres(tx, _), Query::Postgres(q, _)) => q
                .fetch_all(&mut **tx)
                .await
                .map(|rows| rows.into_iter().map(Row::Postgres).collect())
                .map_err(map_sqlx),
            _ => Err(mismatch()),
        }
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<(), Error> {
        let _timer = QueryTimer::start("commit");
        match self {
            Tx::Sqlite(tx, _span) => tx.commit().await,
            Tx::Postgres(tx, _span) => tx.commit().await,
        }
        .map_err(map_sqlx)
    }
}

/// Metric names of the store (see `deploy/metrics.txt`).
pub mod names {
    pub const QUERY_DURATION: &str = "karen_db_query_duration_seconds";
    pub const POOL_ACQUIRE: &str = "karen_db_pool_acquire_seconds";
}

/// Records a statement's duration, labelled by its kind, when dropped.
struct QueryTimer {
    operation: &'static str,
    started: std::time::Instant,
}

impl QueryTimer {
    fn start(operation: &'static str) -> Self {
        Self {
            operation,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        metrics::histogram!(names::QUERY_DURATION, "operation" => self.operation)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// A statement's kind from its first word (a bounded label, never the text).
fn verb_of(sql: &str) -> &'static str {
    let word = sql.split_whitespace().next().unwrap_or_default();
    ["select", "insert", "update", "delete", "with"]
        .into_iter()
        .find(|verb| word.eq_ignore_ascii_case(verb))
        .unwrap_or("other")
}

fn mismatch() -> Error {
    Error::internal("statement built for another backend than its transaction")
}

/// Maps a driver error: connection trouble is `service_unavailable`, the rest is internal.
pub(crate) fn map_sqlx(error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => Error::Unavailable {
            component: "database",
            detail: error.to_string(),
        },
        _ => Error::internal(format!("database: {error}")),
    }
}
