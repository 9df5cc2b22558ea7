//! The scale-out full-text index: PostgreSQL full-text search over the
//! `text_entries` table (migration 0006), under row-level security.
//!
//! Every call is one transaction that first sets the tenant with
//! `set_config('karen.tenant_id', …, true)`, so the table's policy confines it
//! to that tenant's rows (and a pooled connection keeps no tenant afterwards);
//! every statement also names the tenant itself, as the SQL store does.
//!
//! Text is reduced to this crate's words (alphanumeric runs) before
//! PostgreSQL sees it, both when indexed and when searched. A query is
//! rebuilt as `word1 or word2 …` for `websearch_to_tsquery`, which never
//! raises a syntax error; since the words carry no quotes or dashes, nothing
//! the user typed acts as syntax. Matching is English-stemmed like the
//! embedded index (PostgreSQL's `english` configuration also drops English
//! stop words).
//!
//! Scores are `ts_rank_cd` (cover density, normalised by document length),
//! not BM25: there is no inverse document frequency, and the scale differs
//! from the embedded index's. Hybrid retrieval fuses by rank, which both
//! order sensibly.

use std::collections::HashMap;

use async_trait::async_trait;
use karen_domain::ports::{
    EntryKey, EntryKind, Hit, IndexStatus, SearchFilter, TextEntry, TextIndex,
};
use karen_domain::{Error, Result, TenantId};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{MAX_QUERY_BYTES, MAX_QUERY_TERMS, truncate, unavailable, words};

/// Entries per INSERT statement during an upsert.
const UPSERT_BATCH: usize = 500;

/// Full-text search in PostgreSQL, one table for every tenant, isolated by
/// row-level security.
#[derive(Debug, Clone)]
pub struct PostgresTextIndex {
    pool: PgPool,
}

/// One entry as sent to `jsonb_to_recordset`.
#[derive(Serialize)]
struct Row<'a> {
    kind: &'static str,
    id: Uuid,
    owner: Option<Uuid>,
    roles: Vec<&'a str>,
    document: Option<Uuid>,
    body: String,
}

impl PostgresTextIndex {
    /// An index over `pool`, which must connect as Karen's application role
    /// (neither owner of the tables nor superuser, without BYPASSRLS), on a
    /// database migrated to 0006 with that role granted (`karen migrate`).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A transaction confined to `tenant` by row-level security.
    async fn begin(&self, tenant: TenantId) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        sqlx::query("SELECT set_config('karen.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        Ok(tx)
    }
}

/// The words of `text` as indexed: one space between words.
fn indexed_body(text: &str) -> String {
    words(text).collect::<Vec<_>>().join(" ")
}

/// The query for `websearch_to_tsquery`: distinct words joined by ` or `.
/// The word "or" itself is left out (it is the operator here, and an English
/// stop word anyway).
fn query_text(query: &str) -> String {
    let mut seen = Vec::new();
    for word in words(truncate(query, MAX_QUERY_BYTES)) {
        if seen.len() == MAX_QUERY_TERMS {
            break;
        }
        let word = word.to_lowercase();
        if word != "or" && !seen.contains(&word) {
            seen.push(word);
        }
    }
    seen.join(" or ")
}

/// Maps a driver error: an unreachable or overloaded database is
/// `Unavailable`, a bug is internal.
fn map_sqlx(error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match &code[..code.len().min(2)] {
                // connection exception, insufficient resources, operator
                // intervention (shutdown), serialization failure/deadlock
                "08" | "53" | "57" | "40" => unavailable(&error),
                _ => Error::internal(format!("text index: {error}")),
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => unavailable(&error),
        _ => Error::internal(format!("text index: {error}")),
    }
}

/// Maps an error of the insert, where the data itself can be at fault.
fn map_upsert(error: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &error {
        match db.code().as_deref() {
            // text_entries.tenant_id references tenants: no such tenant.
            Some("23503") => return Error::NotFound("tenant"),
            // A tsvector is limited to 1 MB.
            Some("54000") => {
                return Error::invalid(Some("text"), "the text is too long to index");
            }
            _ => {}
        }
    }
    map_sqlx(error)
}

fn parse_hit(kind: &str, id: Uuid) -> Result<EntryKey> {
    Ok(EntryKey::new(EntryKind::parse(kind)?, id))
}

#[async_trait]
impl TextIndex for PostgresTextIndex {
    fn name(&self) -> &str {
        "postgres"
    }

    async fn upsert(&self, tenant: TenantId, entries: Vec<TextEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // One statement cannot update a row twice: the last entry of a key wins.
        let mut last: HashMap<EntryKey, usize> = HashMap::new();
        for (position, entry) in entries.iter().enumerate() {
            last.insert(entry.key, position);
        }
        let rows: Vec<Row<'_>> = entries
            .iter()
            .enumerate()
            .filter(|(position, entry)| last.get(&entry.key) == Some(position))
            .map(|(_, entry)| Row {
                kind: entry.key.kind.as_str(),
                id: entry.key.id,
                owner: entry.access.owner.map(|owner| owner.as_uuid()),
                roles: entry.access.roles.iter().map(|r| r.as_str()).collect(),
                document: entry.access.document,
                body: indexed_body(&entry.text),
            })
            .collect();
        let mut tx = self.begin(tenant).await?;
        for batch in rows.chunks(UPSERT_BATCH) {
            sqlx::query(
                "INSERT INTO text_entries (tenant_id, kind, id, owner, roles, document, tsv) \
                 SELECT $1, e.kind, e.id, e.owner, e.roles, e.document, to_tsvector('english', e.body) \
                   FROM jsonb_to_recordset($2) \
                     AS e(kind text, id uuid, owner uuid, roles text[], document uuid, body text) \
                 ON CONFLICT (tenant_id, kind, id) DO UPDATE \
                    SET owner = EXCLUDED.owner, roles = EXCLUDED.roles, \
                        document = EXCLUDED.document, tsv = EXCLUDED.tsv",
            )
            .bind(tenant.as_uuid())
            .bind(Json(batch))
            .execute(&mut *tx)
            .await
            .map_err(map_upsert)?;
        }
        tx.commit().await.map_err(map_sqlx)
    }

    async fn remove(&self, tenant: TenantId, keys: &[EntryKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let kinds: Vec<&str> = keys.iter().map(|k| k.kind.as_str()).collect();
        let ids: Vec<Uuid> = keys.iter().map(|k| k.id).collect();
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "DELETE FROM text_entries \
              WHERE tenant_id = $1 \
                AND (kind, id) IN (SELECT * FROM unnest($2::text[], $3::uuid[]))",
        )
        .bind(tenant.as_uuid())
        .bind(kinds)
        .bind(ids)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn compact(&self, _tenant: TenantId) -> Result<()> {
        // The entries are rows, deleted in their own statements; the server
        // reclaims dead tuples (VACUUM), as for every other table.
        Ok(())
    }

    async fn search(
        &self,
        tenant: TenantId,
        query: &str,
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>> {
        let text = query_text(query);
        if limit == 0 || text.is_empty() {
            return Ok(Vec::new());
        }
        let kinds: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
        let roles: Vec<&str> = filter.roles.iter().map(|r| r.as_str()).collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.begin(tenant).await?;
        let rows: Vec<(String, Uuid, f32)> = sqlx::query_as(
            "SELECT e.kind, e.id, ts_rank_cd(e.tsv, q, 1) AS score \
               FROM text_entries e, websearch_to_tsquery('english', $2) AS q \
              WHERE e.tenant_id = $1 \
                AND e.tsv @@ q \
                AND (cardinality($3::text[]) = 0 OR e.kind = ANY($3::text[])) \
                AND (e.owner IS NULL OR e.owner = $4) \
                AND (cardinality(e.roles) = 0 OR e.roles && $5::text[]) \
              ORDER BY score DESC, e.kind, e.id \
              LIMIT $6",
        )
        .bind(tenant.as_uuid())
        .bind(text)
        .bind(kinds)
        .bind(filter.user.as_uuid())
        .bind(roles)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        rows.into_iter()
            .map(|(kind, id, score)| {
                Ok(Hit {
                    key: parse_hit(&kind, id)?,
                    score,
                })
            })
            .collect()
    }

    async fn keys(&self, tenant: TenantId) -> Result<Vec<EntryKey>> {
        let mut tx = self.begin(tenant).await?;
        let rows: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT kind, id FROM text_entries WHERE tenant_id = $1 ORDER BY kind, id",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        let mut keys = rows
            .into_iter()
            .map(|(kind, id)| parse_hit(&kind, id))
            .collect::<Result<Vec<_>>>()?;
        // The same order as the embedded index (by kind as an enum, then id).
        keys.sort_unstable();
        Ok(keys)
    }

    async fn status(&self, tenant: TenantId) -> Result<IndexStatus> {
        let mut tx = self.begin(tenant).await?;
        let entries: i64 =
            sqlx::query_scalar("SELECT count(*) FROM text_entries WHERE tenant_id = $1")
                .bind(tenant.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(IndexStatus {
            entries: u64::try_from(entries).unwrap_or_default(),
            // Rows live in the database, durable and backed up with it.
            rebuild_needed: false,
        })
    }

    async fn purge_tenant(&self, tenant: TenantId) -> Result<()> {
        let mut tx = self.begin(tenant).await?;
        sqlx::query("DELETE FROM text_entries WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_become_plain_words() {
        assert_eq!(
            query_text(r#""exact phrase" -not title:x OR (a | b) & c:* 'd' \e"#),
            "exact or phrase or not or title or x or a or b or c or d or e"
        );
        assert_eq!(query_text("  \t "), "");
        assert_eq!(query_text("or OR Or"), "");
        assert_eq!(query_text("Cat cat CAT"), "cat");
    }

    #[test]
    fn bodies_keep_words_only() {
        assert_eq!(indexed_body("it's a (test) — ok?"), "it s a test ok");
    }
}
