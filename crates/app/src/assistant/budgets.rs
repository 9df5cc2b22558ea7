//! Budgets: managing them, and the guard every model call passes. Before a
//! call, the applicable budgets are locked, what each has used (usage records
//! plus reservations of calls in flight) is compared with its hard limit, and
//! a reservation is written: the prompt plus the most completion tokens the
//! remaining budget allows. Concurrent calls take turns on the lock, so the
//! reservations of racing calls never add up to more than a limit. When the
//! call ends, its usage record replaces the reservation in one transaction;
//! a reservation left by a crash becomes a usage record when it expires.

use crate::audit::Record;
use std::sync::Arc;
use std::time::Duration;

use karen_domain::budget::{Budget, BudgetMetric, BudgetPeriod, BudgetScope, Enforcement};
use karen_domain::chat::{UsageRecord, UsageStatus};
use karen_domain::permission::Permission;
use karen_domain::ports::{Reservation, TenantTx};
use karen_domain::{
    ApiKeyId, BudgetId, ConversationId, Error, ReservationId, Result, Subject, SystemReason,
    TenantContext, TenantScope, UsageId, UserId,
};
use time::OffsetDateTime;

use crate::Deps;

/// The largest budget limit accepted (keeps every budget computation far from overflow).
pub const MAX_BUDGET_LIMIT: i64 = 1_000_000_000_000_000;

/// Completion tokens reserved when a request sets no `max_tokens`.
pub const DEFAULT_COMPLETION_ALLOWANCE: u32 = 4096;
/// How long a reservation may stay unsettled before it counts as an interrupted call.
pub(crate) const RESERVATION_TTL: Duration = Duration::from_secs(15 * 60);

/// A budget to create.
pub struct NewBudget {
    /// `tenant`, `user` or `api_key`.
    pub scope: String,
    /// The user or API key, for those scopes.
    pub subject_id: Option<uuid::Uuid>,
    pub metric: String,
    pub period: String,
    pub limit: i64,
    pub enforcement: String,
}

/// A budget with what it has used in its current period.
#[derive(Debug, Clone)]
pub struct BudgetStatus {
    pub budget: Budget,
    pub used: i64,
    pub resets_at: OffsetDateTime,
}

/// What a call may do, granted by [`BudgetGuard::reserve`].
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub reservation: ReservationId,
    /// The most completion tokens the hard budgets still allow (`None`: no hard budget applies).
    pub completion_allowance: Option<u32>,
}

impl Grant {
    /// The `max_tokens` to send: the request's, capped by the budgets.
    pub(crate) fn cap(&self, max_tokens: Option<u32>) -> Option<u32> {
        match (max_tokens, self.completion_allowance) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (asked, cap) => asked.or(cap),
        }
    }
}

/// The call a reservation is for.
pub(crate) struct CallPlan<'a> {
    pub ctx: &'a TenantContext,
    pub conversation: Option<ConversationId>,
    pub provider: &'a str,
    pub model: &'a str,
    pub prompt_tokens: u32,
    pub max_tokens: Option<u32>,
    /// Whether the call generates tokens (chat) or only reads its input
    /// (embeddings: nothing is reserved beyond the prompt, which may use a
    /// budget up to its last token).
    pub generates: bool,
}

/// Reserves and settles budget around model calls.
#[derive(Clone)]
pub(crate) struct BudgetGuard {
    deps: Arc<Deps>,
}

fn subject_of(ctx: &TenantContext) -> (UserId, Option<ApiKeyId>) {
    let principal = ctx.principal();
    let key = match principal.subject {
        Subject::ApiKey { key_id } => Some(key_id),
        Subject::User { .. } => None,
    };
    (principal.user_id, key)
}

fn until(now: OffsetDateTime, at: OffsetDateTime) -> Duration {
    Duration::try_from(at - now)
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1))
}

impl BudgetGuard {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Checks the hard limits and writes the reservation; `budget_exceeded`
    /// (naming the limit and when it resets) if the prompt alone does not fit.
    pub(crate) async fn reserve(&self, plan: CallPlan<'_>) -> Result<Grant> {
        let now = self.deps.clock.now();
        let (user, key) = subject_of(plan.ctx);
        let mut tx = self.deps.store.tenant(plan.ctx.scope()).await?;
        let budgets = tx.budgets().lock_applicable(user, key, now).await?;
        let prices = &self.deps.assistant;
        let prompt_cost = prices.cost_micros(plan.model, plan.prompt_tokens, 0);
        let per_completion_token = prices.cost_micros(plan.model, 0, 1000);
        // The most completion tokens every hard budget still allows (None: no hard budget applies).
        let mut budget_cap: Option<u32> = None;
        for budget in &budgets {
            let (from, next) = budget.period.window(now);
            let used = tx
                .budgets()
                .consumption(budget.scope, budget.metric, from, next)
                .await?;
            let remaining = budget.limit - used;
            let (needed, fits) = match budget.metric {
                // Only the input counts: it fits if it stays within the limit.
                BudgetMetric::Tokens if !plan.generates => {
                    let prompt = i64::from(plan.prompt_tokens);
                    (prompt, remaining - prompt + 1)
                }
                BudgetMetric::CostMicros if !plan.generates => {
                    (prompt_cost, remaining - prompt_cost + 1)
                }
                BudgetMetric::Tokens => {
                    let prompt = i64::from(plan.prompt_tokens);
                    (prompt, remaining - prompt)
                }
                BudgetMetric::CostMicros if per_completion_token > 0 => (
                    prompt_cost,
                    i64::try_from(
                        (i128::from(remaining) - i128::from(prompt_cost)) * 1000
                            / i128::from(per_completion_token),
                    )
                    .unwrap_or(i64::MAX),
                ),
                // Completion is free under this price table: only the prompt's cost matters.
                BudgetMetric::CostMicros => (prompt_cost, i64::from(u32::MAX)),
            };
            match budget.enforcement {
                Enforcement::Hard if fits < 1 => {
                    crate::telemetry::budget_rejected(budget.scope);
                    return Err(Error::BudgetExceeded {
                        limit: budget.describe(),
                        resets_at: next,
                        retry_after: until(now, next),
                    });
                }
                Enforcement::Hard => {
                    let fits = u32::try_from(fits).unwrap_or(u32::MAX);
                    budget_cap = Some(budget_cap.map_or(fits, |cap| cap.min(fits)));
                }
                Enforcement::Soft if used + needed > budget.limit => {
                    tracing::warn!(tenant_id = %plan.ctx.tenant_id(), budget_id = %budget.id, used, limit = budget.limit,
                        "soft budget exceeded");
                }
                Enforcement::Soft => {}
            }
        }
        let reserved_completion = if plan.generates {
            plan.max_tokens
                .unwrap_or(DEFAULT_COMPLETION_ALLOWANCE)
                .min(budget_cap.unwrap_or(u32::MAX))
        } else {
            0
        };
        let reservation = Reservation {
            id: ReservationId::generate(),
            tenant_id: plan.ctx.tenant_id(),
            user_id: Some(user),
            api_key_id: key,
            conversation_id: plan.conversation,
            provider: plan.provider.to_owned(),
            model: plan.model.to_owned(),
            prompt_tokens: plan.prompt_tokens,
            completion_allowance: reserved_completion,
            cost_micros: prices.cost_micros(plan.model, plan.prompt_tokens, reserved_completion),
            created_at: now,
            expires_at: now + RESERVATION_TTL,
        };
        tx.budgets().insert_reservation(&reservation).await?;
        tx.commit().await?;
        Ok(Grant {
            reservation: reservation.id,
            // What the call may produce is what was reserved, not what the budget could hold.
            completion_allowance: budget_cap.map(|_| reserved_completion),
        })
    }

    /// Replaces the reservation with the call's usage record (in `tx`, with
    /// whatever else the call stores).
    pub(crate) async fn settle(
        tx: &mut dyn TenantTx,
        grant: &Grant,
        record: &UsageRecord,
    ) -> Result<()> {
        if tx.budgets().delete_reservation(grant.reservation).await? {
            tx.usage().insert_usage(record).await
        } else {
            // The reservation outlived its time to live and was already turned
            // into a usage record: recording the call again would charge it twice.
            tracing::warn!(tenant_id = %record.tenant_id, "a call settled after its reservation was reconciled");
            Ok(())
        }
    }

    /// Removes a reservation whose call never reached a provider.
    pub(crate) async fn release(&self, ctx: &TenantContext, grant: &Grant) -> Result<()> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        tx.budgets().delete_reservation(grant.reservation).await?;
        tx.commit().await
    }
}

/// Turns the expired reservations of one tenant into usage records of the
/// whole reserved amount (status `interrupted`, counted locally): the calls
/// happened, their outcome is unknown, and the meter must not lose them.
pub(crate) async fn reconcile_tenant(deps: &Deps, tenant: karen_domain::TenantId) -> Result<usize> {
    let now = deps.clock.now();
    let mut tx = deps
        .store
        .tenant(TenantScope::system(tenant, SystemReason::Lifecycle))
        .await?;
    let expired = tx.budgets().expired_reservations(now).await?;
    for reservation in &expired {
        let record = UsageRecord {
            id: UsageId::from_uuid(reservation.id.as_uuid()),
            tenant_id: tenant,
            user_id: reservation.user_id,
            api_key_id: reservation.api_key_id,
            conversation_id: reservation.conversation_id,
            provider: reservation.provider.clone(),
            model: reservation.model.clone(),
            prompt_tokens: reservation.prompt_tokens,
            completion_tokens: reservation.completion_allowance,
            counted_locally: true,
            latency_ms: 0,
            status: UsageStatus::Interrupted,
            cost_micros: reservation.cost_micros,
            created_at: reservation.created_at,
        };
        tx.budgets().delete_reservation(reservation.id).await?;
        tx.usage().insert_usage(&record).await?;
    }
    tx.commit().await?;
    Ok(expired.len())
}

/// Managing budgets (`billing:manage`) and reading their status (`usage:read`).
#[derive(Clone)]
pub struct BudgetService {
    deps: Arc<Deps>,
}

impl BudgetService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Every budget of the tenant with its use in the current period.
    pub async fn list(&self, ctx: &TenantContext) -> Result<Vec<BudgetStatus>> {
        ctx.require(Permission::UsageRead)?;
        let now = self.deps.clock.now();
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let budgets = tx.budgets().list_budgets().await?;
        let mut statuses = Vec::with_capacity(budgets.len());
        for budget in budgets {
            let (from, next) = budget.period.window(now);
            let used = tx
                .budgets()
                .consumption(budget.scope, budget.metric, from, next)
                .await?;
            statuses.push(BudgetStatus {
                budget,
                used,
                resets_at: next,
            });
        }
        tx.commit().await?;
        Ok(statuses)
    }

    /// Creates a budget.
    pub async fn create(&self, ctx: &TenantContext, input: NewBudget) -> Result<Budget> {
        ctx.require(Permission::BillingManage)?;
        let scope = match (input.scope.as_str(), input.subject_id) {
            ("tenant", None) => BudgetScope::Tenant,
            ("user", Some(id)) => BudgetScope::User(UserId::from_uuid(id)),
            ("api_key", Some(id)) => BudgetScope::ApiKey(ApiKeyId::from_uuid(id)),
            ("tenant", Some(_)) => {
                return Err(Error::invalid(
                    Some("subject_id"),
                    "a tenant budget has no subject_id",
                ));
            }
            ("user" | "api_key", None) => {
                return Err(Error::invalid(
                    Some("subject_id"),
                    "name the user or API key in subject_id",
                ));
            }
            (other, _) => {
                return Err(Error::invalid(
                    Some("scope"),
                    format!(
                        "scope '{}' is not tenant, user or api_key",
                        karen_domain::values::printable(other, 40)
                    ),
                ));
            }
        };
        if !(1..=MAX_BUDGET_LIMIT).contains(&input.limit) {
            return Err(Error::invalid(
                Some("limit"),
                format!("limit must be between 1 and {MAX_BUDGET_LIMIT}"),
            ));
        }
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        // The subject must be of this tenant (another tenant's id is unknown here).
        match scope {
            BudgetScope::User(user) if tx.users().user_by_id(user).await?.is_none() => {
                return Err(Error::invalid(Some("subject_id"), "there is no such user"));
            }
            BudgetScope::ApiKey(key) if tx.api_keys().api_key(key).await?.is_none() => {
                return Err(Error::invalid(
                    Some("subject_id"),
                    "there is no such API key",
                ));
            }
            _ => {}
        }
        let budget = Budget {
            id: BudgetId::generate(),
            tenant_id: ctx.tenant_id(),
            scope,
            metric: BudgetMetric::parse(&input.metric)?,
            period: BudgetPeriod::parse(&input.period)?,
            limit: input.limit,
            enforcement: Enforcement::parse(&input.enforcement)?,
            created_at: self.deps.clock.now(),
        };
        tx.budgets().insert_budget(&budget).await?;
        let audit = Record::new("budget.create")
            .target("budget", budget.id)
            .after(&serde_json::json!({
                "scope": input.scope, "subject_id": input.subject_id, "metric": input.metric,
                "period": input.period, "limit": input.limit, "enforcement": input.enforcement,
            }));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        Ok(budget)
    }

    /// Deletes a budget.
    pub async fn delete(&self, ctx: &TenantContext, id: BudgetId) -> Result<()> {
        ctx.require(Permission::BillingManage)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        if !tx.budgets().delete_budget(id).await? {
            return Err(Error::NotFound("budget"));
        }
        let audit = Record::new("budget.delete").target("budget", id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await
    }

    /// Settles reservations left by calls that never finished (after a crash),
    /// for every tenant; returns how many.
    pub async fn reconcile_all(&self) -> Result<usize> {
        let mut total = 0;
        let mut page = karen_domain::page::PageRequest {
            after: None,
            limit: karen_domain::page::MAX_LIMIT,
        };
        loop {
            let mut platform = self.deps.store.platform().await?;
            let tenants = platform.list_tenants(&page).await?;
            platform.commit().await?;
            let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
            let more = tenants.len() > limit;
            let shown = &tenants[..tenants.len().min(limit)];
            for tenant in shown {
                total += reconcile_tenant(&self.deps, tenant.id).await?;
            }
            match (more, shown.last()) {
                (true, Some(last)) => page.after = Some(last.id.as_uuid()),
                _ => return Ok(total),
            }
        }
    }
}
