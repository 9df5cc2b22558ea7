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
    TenantContext, TenantId, TenantScope, UsageId, UserId,
};
use time::OffsetDateTime;

use super::meter::UsageWriter;
use crate::Deps;
use crate::cache::{EpochCache, Topic};

/// The largest budget limit accepted (keeps every budget computation far from overflow).
pub const MAX_BUDGET_LIMIT: i64 = 1_000_000_000_000_000;

/// Completion tokens reserved when a request sets no `max_tokens`.
pub const DEFAULT_COMPLETION_ALLOWANCE: u32 = 4096;
/// Tenants whose budgets are kept in memory, at most.
const BUDGET_CACHE_TENANTS: usize = 10_000;
/// How long a tenant's budgets are kept (bounds staleness if an epoch bump is lost).
const BUDGET_CACHE_TTL: Duration = Duration::from_secs(30);
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
    /// `None` when no hard budget applies to the caller (nothing was reserved).
    pub reservation: Option<ReservationId>,
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

/// Reserves and settles budget around model calls (one per process: it
/// holds the budget cache and the usage writer).
#[derive(Clone)]
pub(crate) struct BudgetGuard {
    deps: Arc<Deps>,
    /// Each tenant's budgets, filed under the tenant's `budgets` epoch.
    budgets: Arc<EpochCache<TenantId, Arc<Vec<Budget>>>>,
    writer: UsageWriter,
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
    /// The guard and its usage writer task (needs a Tokio runtime).
    pub(crate) fn start(deps: Arc<Deps>) -> Self {
        Self {
            budgets: Arc::new(
                EpochCache::new(
                    "budgets",
                    Topic::Budgets,
                    BUDGET_CACHE_TENANTS,
                    BUDGET_CACHE_TTL,
                )
                .switched(deps.caching),
            ),
            writer: UsageWriter::start(deps.clone()),
            deps,
        }
    }

    /// Checks the hard limits and writes the reservation; `budget_exceeded`
    /// (naming the limit and when it resets) if the prompt alone does not fit.
    /// A caller no hard budget applies to reserves nothing (a budget created
    /// later binds from the next call: creating one bumps the cache's epoch).
    pub(crate) async fn reserve(&self, plan: CallPlan<'_>) -> Result<Grant> {
        let (user, key) = subject_of(plan.ctx);
        let applicable = self.applicable(plan.ctx, user, key).await?;
        if applicable.is_empty() {
            return Ok(Grant {
                reservation: None,
                completion_allowance: None,
            });
        }
        if !applicable
            .iter()
            .any(|b| matches!(b.enforcement, Enforcement::Hard))
        {
            self.warn_soft(&plan, &applicable).await?;
            return Ok(Grant {
                reservation: None,
                completion_allowance: None,
            });
        }
        let now = self.deps.clock.now();
        let mut tx = self.deps.store.tenant(plan.ctx.scope()).await?;
        let budgets = tx.budgets().lock_applicable(user, key, now).await?;
        let prices = &self.deps.assistant;
        // The most completion tokens every hard budget still allows (None: no hard budget applies).
        let mut budget_cap: Option<u32> = None;
        for budget in &budgets {
            let (from, next) = budget.period.window(now);
            let used = tx
                .budgets()
                .consumption(budget.scope, budget.metric, from, next)
                .await?;
            if let Some(fits) = self.assess(&plan, budget, used, now)? {
                budget_cap = Some(budget_cap.map_or(fits, |cap| cap.min(fits)));
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
            reservation: Some(reservation.id),
            // What the call may produce is what was reserved, not what the budget could hold.
            completion_allowance: budget_cap.map(|_| reserved_completion),
        })
    }

    /// The tenant's budgets that apply to `user` (through `key`), from the cache.
    async fn applicable(
        &self,
        ctx: &TenantContext,
        user: UserId,
        key: Option<ApiKeyId>,
    ) -> Result<Vec<Budget>> {
        let tenant = ctx.tenant_id();
        let all = self
            .budgets
            .get_or_load(self.deps.counters.as_ref(), tenant, tenant, || async {
                let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
                let budgets = tx.budgets().list_budgets().await?;
                tx.commit().await?;
                Ok::<_, Error>(Arc::new(budgets))
            })
            .await?;
        Ok(all
            .iter()
            .filter(|b| match b.scope {
                BudgetScope::Tenant => true,
                BudgetScope::User(subject) => subject == user,
                BudgetScope::ApiKey(subject) => Some(subject) == key,
            })
            .cloned()
            .collect())
    }

    /// Only soft budgets apply: nothing to hold back, but a call over one is logged.
    async fn warn_soft(&self, plan: &CallPlan<'_>, budgets: &[Budget]) -> Result<()> {
        let now = self.deps.clock.now();
        let mut tx = self.deps.store.tenant_read(plan.ctx.scope()).await?;
        for budget in budgets {
            let (from, next) = budget.period.window(now);
            let used = tx
                .budgets()
                .consumption(budget.scope, budget.metric, from, next)
                .await?;
            self.assess(plan, budget, used, now)?;
        }
        tx.commit().await
    }

    /// Compares what `budget` has `used` with what the call needs: for a hard
    /// budget the completion tokens it still allows (`budget_exceeded` if not
    /// even the prompt fits), for a soft one `None` (and a warning when over).
    fn assess(
        &self,
        plan: &CallPlan<'_>,
        budget: &Budget,
        used: i64,
        now: OffsetDateTime,
    ) -> Result<Option<u32>> {
        let prices = &self.deps.assistant;
        let prompt_cost = prices.cost_micros(plan.model, plan.prompt_tokens, 0);
        let per_completion_token = prices.cost_micros(plan.model, 0, 1000);
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
                let (_, next) = budget.period.window(now);
                Err(Error::BudgetExceeded {
                    limit: budget.describe(),
                    resets_at: next,
                    retry_after: until(now, next),
                })
            }
            Enforcement::Hard => Ok(Some(u32::try_from(fits).unwrap_or(u32::MAX))),
            Enforcement::Soft => {
                if used + needed > budget.limit {
                    tracing::warn!(tenant_id = %plan.ctx.tenant_id(), budget_id = %budget.id, used, limit = budget.limit,
                        "soft budget exceeded");
                }
                Ok(None)
            }
        }
    }

    /// Replaces the reservation with the call's usage record (in `tx`, with
    /// whatever else the call stores).
    pub(crate) async fn settle(
        tx: &mut dyn TenantTx,
        grant: &Grant,
        record: &UsageRecord,
    ) -> Result<()> {
        let Some(reservation) = grant.reservation else {
            return tx.usage().insert_usage(record).await;
        };
        if tx.budgets().delete_reservation(reservation).await? {
            tx.usage().insert_usage(record).await
        } else {
            // The reservation outlived its time to live and was already turned
            // into a usage record: recording the call again would charge it twice.
            tracing::warn!(tenant_id = %record.tenant_id, "a call settled after its reservation was reconciled");
            Ok(())
        }
    }

    /// Replaces the reservation with the call's usage record through the usage
    /// writer (for calls that store nothing else); returns once committed.
    pub(crate) async fn settle_alone(
        &self,
        grant: &Grant,
        record: UsageRecord,
        event: (karen_domain::Actor, crate::audit::Record),
    ) -> Result<()> {
        self.writer.write(grant.reservation, record, event).await
    }

    /// Removes a reservation whose call never reached a provider.
    pub(crate) async fn release(&self, ctx: &TenantContext, grant: &Grant) -> Result<()> {
        let Some(reservation) = grant.reservation else {
            return Ok(());
        };
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        tx.budgets().delete_reservation(reservation).await?;
        tx.commit().await
    }

    /// Stops the usage writer after committing what it holds (on shutdown).
    pub(crate) async fn stop(&self) {
        self.writer.stop().await;
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
        self.deps.budgets_changed(ctx.tenant_id()).await;
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
        tx.commit().await?;
        self.deps.budgets_changed(ctx.tenant_id()).await;
        Ok(())
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
