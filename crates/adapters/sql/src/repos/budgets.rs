//! Budgets and reservations.

use async_trait::async_trait;
use karen_domain::budget::{Budget, BudgetMetric, BudgetPeriod, BudgetScope, Enforcement};
use karen_domain::clock::to_millis;
use karen_domain::ports::{BudgetRepo, Reservation};
use karen_domain::{ApiKeyId, BudgetId, ConversationId, ReservationId, Result, TenantId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use super::batch::{MAX_ROWS, statement};
use super::{bind_call, i32_of};
use crate::conn::Row;
use crate::rows;
use crate::tenant::SqlTenantTx;

fn budget(row: &Row) -> Result<Budget> {
    Ok(Budget {
        id: BudgetId::from_uuid(row.get("id")?),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        scope: BudgetScope::from_parts(&row.get::<String>("scope")?, row.get("subject_id")?)?,
        metric: BudgetMetric::parse(&row.get::<String>("metric")?)?,
        period: BudgetPeriod::parse(&row.get::<String>("period")?)?,
        limit: row.get("limit_value")?,
        enforcement: Enforcement::parse(&row.get::<String>("enforcement")?)?,
        created_at: rows::time(row, "created_at")?,
    })
}

fn reservation(row: &Row) -> Result<Reservation> {
    let count =
        |column: &str| -> Result<u32> { Ok(u32::try_from(row.get::<i32>(column)?).unwrap_or(0)) };
    Ok(Reservation {
        id: ReservationId::from_uuid(row.get("id")?),
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
        completion_allowance: count("completion_allowance")?,
        cost_micros: row.get("cost_micros")?,
        created_at: rows::time(row, "created_at")?,
        expires_at: rows::time(row, "expires_at")?,
    })
}

/// The user and key columns a scope filters on (`None`: no filter).
fn scope_filter(scope: BudgetScope) -> (Option<Uuid>, Option<Uuid>) {
    match scope {
        BudgetScope::Tenant => (None, None),
        BudgetScope::User(user) => (Some(user.as_uuid()), None),
        BudgetScope::ApiKey(key) => (None, Some(key.as_uuid())),
    }
}

const TOKENS_USED: &str = "SELECT CAST(\
    COALESCE((SELECT SUM(tokens) FROM usage_aggregates WHERE tenant_id = $1 AND scope = $4 AND subject_id = $5 \
      AND day >= $2 AND day < $3), 0) \
  + COALESCE((SELECT SUM(prompt_tokens + completion_allowance) FROM usage_reservations WHERE tenant_id = $1 \
      AND created_at >= $2 AND created_at < $3 AND ($6 IS NULL OR user_id = $6) AND ($7 IS NULL OR api_key_id = $7)), 0) \
  AS BIGINT) AS used";

const COST_USED: &str = "SELECT CAST(\
    COALESCE((SELECT SUM(cost_micros) FROM usage_aggregates WHERE tenant_id = $1 AND scope = $4 AND subject_id = $5 \
      AND day >= $2 AND day < $3), 0) \
  + COALESCE((SELECT SUM(cost_micros) FROM usage_reservations WHERE tenant_id = $1 \
      AND created_at >= $2 AND created_at < $3 AND ($6 IS NULL OR user_id = $6) AND ($7 IS NULL OR api_key_id = $7)), 0) \
  AS BIGINT) AS used";

const TOKENS_RECORDED: &str = "SELECT CAST(COALESCE(SUM(tokens), 0) AS BIGINT) AS used FROM usage_aggregates \
    WHERE tenant_id = $1 AND scope = $4 AND subject_id = $5 AND day >= $2 AND day < $3";

const COST_RECORDED: &str = "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS used FROM usage_aggregates \
    WHERE tenant_id = $1 AND scope = $4 AND subject_id = $5 AND day >= $2 AND day < $3";

/// The columns of a reservation row, after the tenant.
const RESERVATION_COLUMNS: usize = 11;

#[async_trait]
impl BudgetRepo for SqlTenantTx {
    async fn list_budgets(&mut self) -> Result<Vec<Budget>> {
        let q = self.q("SELECT * FROM budgets WHERE tenant_id = $1 ORDER BY id");
        self.tx.fetch_all(q).await?.iter().map(budget).collect()
    }

    async fn insert_budget(&mut self, b: &Budget) -> Result<()> {
        let q = self
            .q("INSERT INTO budgets (tenant_id, id, scope, subject_id, metric, period, limit_value, enforcement, created_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(b.id.as_uuid())
            .bind(b.scope.kind())
            .bind(b.scope.subject())
            .bind(b.metric.as_str())
            .bind(b.period.as_str())
            .bind(b.limit)
            .bind(b.enforcement.as_str())
            .bind(to_millis(b.created_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn delete_budget(&mut self, id: BudgetId) -> Result<bool> {
        let q = self
            .q("DELETE FROM budgets WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn consumption(
        &mut self,
        scope: BudgetScope,
        metric: BudgetMetric,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<i64> {
        let sql = match metric {
            BudgetMetric::Tokens => TOKENS_USED,
            BudgetMetric::CostMicros => COST_USED,
        };
        let (user, key) = scope_filter(scope);
        let q = self
            .q(sql)
            .bind(to_millis(from))
            .bind(to_millis(until))
            .bind(scope.kind())
            .bind(scope.subject().unwrap_or_else(Uuid::nil))
            .bind(user)
            .bind(key);
        self.tx.fetch_one(q).await?.get("used")
    }

    async fn recorded_consumption(
        &mut self,
        scope: BudgetScope,
        metric: BudgetMetric,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<i64> {
        let sql = match metric {
            BudgetMetric::Tokens => TOKENS_RECORDED,
            BudgetMetric::CostMicros => COST_RECORDED,
        };
        let q = self
            .q(sql)
            .bind(to_millis(from))
            .bind(to_millis(until))
            .bind(scope.kind())
            .bind(scope.subject().unwrap_or_else(Uuid::nil));
        self.tx.fetch_one(q).await?.get("used")
    }

    async fn window_reservations(
        &mut self,
        scope: BudgetScope,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<Reservation>> {
        let (user, key) = scope_filter(scope);
        let q = self
            .q("SELECT * FROM usage_reservations WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 \
                AND ($4 IS NULL OR user_id = $4) AND ($5 IS NULL OR api_key_id = $5) ORDER BY id")
            .bind(to_millis(from))
            .bind(to_millis(until))
            .bind(user)
            .bind(key);
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(reservation)
            .collect()
    }

    async fn insert_reservations(&mut self, reservations: &[Reservation]) -> Result<()> {
        for chunk in reservations.chunks(MAX_ROWS) {
            let sql = statement(
                "INSERT INTO usage_reservations (tenant_id, id, user_id, api_key_id, conversation_id, provider, model, \
                 prompt_tokens, completion_allowance, cost_micros, created_at, expires_at) VALUES ",
                RESERVATION_COLUMNS,
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
                .bind(i32_of(r.completion_allowance))
                .bind(r.cost_micros)
                .bind(to_millis(r.created_at))
                .bind(to_millis(r.expires_at));
            }
            self.tx.execute(q).await?;
        }
        Ok(())
    }

    async fn insert_reservation(&mut self, r: &Reservation) -> Result<()> {
        self.insert_reservations(std::slice::from_ref(r)).await
    }

    async fn delete_reservation(&mut self, id: ReservationId) -> Result<bool> {
        let q = self
            .q("DELETE FROM usage_reservations WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn delete_reservations(&mut self, ids: &[ReservationId]) -> Result<Vec<ReservationId>> {
        let mut deleted = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_ROWS) {
            let sql = statement(
                "DELETE FROM usage_reservations WHERE tenant_id = $1 AND id IN (",
                0,
                chunk.len(),
                ") RETURNING id",
            );
            let mut q = self.q(sql);
            for id in chunk {
                q = q.bind(id.as_uuid());
            }
            for row in self.tx.fetch_all(q).await? {
                deleted.push(ReservationId::from_uuid(row.get("id")?));
            }
        }
        Ok(deleted)
    }

    async fn expired_reservations(&mut self, at: OffsetDateTime) -> Result<Vec<Reservation>> {
        let q = self
            .q("SELECT * FROM usage_reservations WHERE tenant_id = $1 AND expires_at < $2 ORDER BY id LIMIT 1000")
            .bind(to_millis(at));
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(reservation)
            .collect()
    }
}
