//! Usage records.

use std::collections::BTreeMap;

use async_trait::async_trait;
use karen_domain::chat::{UsageRecord, UsageStatus};
use karen_domain::clock::to_millis;
use karen_domain::ports::{ModelUsage, UsageFilter, UsageRepo, UsageTotals};
use karen_domain::{ApiKeyId, ConversationId, Result, TenantId, UsageId, UserId};
use uuid::Uuid;

use super::batch::{MAX_ROWS, statement};
use super::{bind_call, i32_of};
use crate::conn::{Query, Row};
use crate::rows;
use crate::tenant::SqlTenantTx;

fn record(row: &Row) -> Result<UsageRecord> {
    let count =
        |column: &str| -> Result<u32> { Ok(u32::try_from(row.get::<i32>(column)?).unwrap_or(0)) };
    Ok(UsageRecord {
        id: UsageId::from_uuid(row.get("id")?),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        user_id: row.get::<Option<Uuid>>("user_id")?.map(UserId::from_uuid),
        api_key_id: row
            .get::<Option<Uuid>>("api_key_id")?
            .map(ApiKeyId::from_uuid),
        conversation_id: row
            .get::<Option<Uuid>>("conversation_id")?
            .map(ConversationId::from_uuid),
        provider: row.get("provider")?,
        model: row.get("model")?,
        prompt_tokens: count("prompt_tokens")?,
        completion_tokens: count("completion_tokens")?,
        counted_locally: row.get("counted_locally")?,
        latency_ms: count("latency_ms")?,
        status: UsageStatus::parse(&row.get::<String>("status")?)?,
        cost_micros: row.get("cost_micros")?,
        created_at: rows::time(row, "created_at")?,
    })
}

/// Binds the filter as `$2`..`$6` (the tenant is `$1`).
fn bind_filter(q: Query, filter: &UsageFilter) -> Query {
    q.bind(filter.from.map(to_millis))
        .bind(filter.until.map(to_millis))
        .bind(filter.user.map(|u| u.as_uuid()))
        .bind(filter.api_key.map(|k| k.as_uuid()))
        .bind(filter.model.clone())
}

/// Milliseconds in a day: aggregates are keyed by UTC midnight.
const DAY_MS: i64 = 86_400_000;

/// Tokens and cost per (scope, subject, UTC day) of `records`.
fn daily_sums(records: &[UsageRecord]) -> BTreeMap<(&'static str, Uuid, i64), (i64, i64)> {
    let mut sums = BTreeMap::new();
    for r in records {
        let day = to_millis(r.created_at).div_euclid(DAY_MS) * DAY_MS;
        let tokens = i64::from(r.prompt_tokens) + i64::from(r.completion_tokens);
        let scopes = [
            Some(("tenant", Uuid::nil())),
            r.user_id.map(|u| ("user", u.as_uuid())),
            r.api_key_id.map(|k| ("api_key", k.as_uuid())),
        ];
        for (scope, subject) in scopes.into_iter().flatten() {
            let sum: &mut (i64, i64) = sums.entry((scope, subject, day)).or_default();
            sum.0 = sum.0.saturating_add(tokens);
            sum.1 = sum.1.saturating_add(r.cost_micros);
        }
    }
    sums
}

#[async_trait]
impl UsageRepo for SqlTenantTx {
    async fn insert_usage(&mut self, r: &UsageRecord) -> Result<()> {
        self.insert_usage_batch(std::slice::from_ref(r)).await
    }

    async fn insert_usage_batch(&mut self, records: &[UsageRecord]) -> Result<()> {
        for chunk in records.chunks(MAX_ROWS) {
            let sql = statement(
                "INSERT INTO usage_records (tenant_id, id, user_id, api_key_id, conversation_id, provider, model, \
                 prompt_tokens, completion_tokens, counted_locally, latency_ms, status, cost_micros, created_at) VALUES ",
                13,
                chunk.len(),
                "",
            );
            let mut q = self.q(sql);
            for r in chunk {
                q = bind_call(
                    q,
                    r.id.as_uuid(),
                    r.user_id,
                    r.api_key_id,
                    r.conversation_id,
                    &r.provider,
                    &r.model,
                    r.prompt_tokens,
                )
                .bind(i32_of(r.completion_tokens))
                .bind(r.counted_locally)
                .bind(i32_of(r.latency_ms))
                .bind(r.status.as_str())
                .bind(r.cost_micros)
                .bind(to_millis(r.created_at));
            }
            self.tx.execute(q).await?;
        }
        // Keep the daily sums (what budgets read) in step, in this transaction;
        // summed per key first (one statement may not touch a row twice), and in
        // key order, so that concurrent writers lock the rows in the same order.
        let sums = daily_sums(records);
        let sums: Vec<_> = sums.into_iter().collect();
        for chunk in sums.chunks(MAX_ROWS) {
            let sql = statement(
                "INSERT INTO usage_aggregates (tenant_id, scope, subject_id, day, tokens, cost_micros) VALUES ",
                5,
                chunk.len(),
                " ON CONFLICT (tenant_id, scope, subject_id, day) DO UPDATE SET \
                 tokens = usage_aggregates.tokens + excluded.tokens, \
                 cost_micros = usage_aggregates.cost_micros + excluded.cost_micros",
            );
            let mut q = self.q(sql);
            for ((scope, subject, day), (tokens, cost)) in chunk {
                q = q
                    .bind(*scope)
                    .bind(*subject)
                    .bind(*day)
                    .bind(*tokens)
                    .bind(*cost);
            }
            self.tx.execute(q).await?;
        }
        Ok(())
    }

    async fn list_usage(
        &mut self,
        filter: &UsageFilter,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<UsageRecord>> {
        let q = self.q(
            "SELECT * FROM usage_records WHERE tenant_id = $1 AND ($2 IS NULL OR created_at >= $2) \
             AND ($3 IS NULL OR created_at < $3) AND ($4 IS NULL OR user_id = $4) AND ($5 IS NULL OR api_key_id = $5) \
             AND ($6 IS NULL OR model = $6) AND ($7 IS NULL OR id > $7) ORDER BY id LIMIT $8",
        );
        let q = bind_filter(q, filter).bind(after).bind(limit);
        self.tx.fetch_all(q).await?.iter().map(record).collect()
    }

    async fn usage_totals(&mut self, filter: &UsageFilter) -> Result<UsageTotals> {
        let q = self.q(
            // CAST: PostgreSQL sums BIGINT into NUMERIC; both dialects accept CAST.
            "SELECT count(*) AS calls, CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros \
             FROM usage_records WHERE tenant_id = $1 AND ($2 IS NULL OR created_at >= $2) \
             AND ($3 IS NULL OR created_at < $3) AND ($4 IS NULL OR user_id = $4) AND ($5 IS NULL OR api_key_id = $5) \
             AND ($6 IS NULL OR model = $6)",
        );
        let row = self.tx.fetch_one(bind_filter(q, filter)).await?;
        Ok(UsageTotals {
            calls: row.get("calls")?,
            prompt_tokens: row.get("prompt_tokens")?,
            completion_tokens: row.get("completion_tokens")?,
            cost_micros: row.get("cost_micros")?,
        })
    }

    async fn usage_by_model(&mut self, filter: &UsageFilter) -> Result<Vec<ModelUsage>> {
        let q = self.q(
            "SELECT provider, model, count(*) AS calls, \
             CAST(COALESCE(SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors, \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros, \
             CAST(COALESCE(SUM(latency_ms), 0) AS BIGINT) AS latency_ms \
             FROM usage_records WHERE tenant_id = $1 AND ($2 IS NULL OR created_at >= $2) \
             AND ($3 IS NULL OR created_at < $3) AND ($4 IS NULL OR user_id = $4) AND ($5 IS NULL OR api_key_id = $5) \
             AND ($6 IS NULL OR model = $6) GROUP BY provider, model ORDER BY cost_micros DESC, calls DESC, model",
        );
        self.tx
            .fetch_all(bind_filter(q, filter))
            .await?
            .iter()
            .map(|row| {
                Ok(ModelUsage {
                    provider: row.get("provider")?,
                    model: row.get("model")?,
                    calls: row.get("calls")?,
                    errors: row.get("errors")?,
                    prompt_tokens: row.get("prompt_tokens")?,
                    completion_tokens: row.get("completion_tokens")?,
                    cost_micros: row.get("cost_micros")?,
                    latency_ms: row.get("latency_ms")?,
                })
            })
            .collect()
    }
}
