//! Budgets: managing them, and the guard every model call passes.
//!
//! Hard budgets are enforced on running totals in the counters (in process
//! in embedded mode, Redis when scaled out), one per budget and window:
//! what usage records have used plus the holds of calls in flight. Before a
//! call, one atomic "add if it fits" on each applicable hard budget holds
//! the prompt plus the most completion tokens the budgets allow (all or
//! nothing: holds already taken are given back when a later budget
//! refuses), so racing calls never hold more than a limit, on any replica.
//! A window's total is seeded from the store (usage records and the
//! reservations in it) the first time it is needed, by one replica only.
//!
//! No transaction runs on the request path: the reservation's row, which
//! turns into an `interrupted` usage record if the call never settles (a
//! crash), is inserted by the usage writer in its next batch. When the call
//! ends, its usage record replaces the reservation (or the row is never
//! written, if still queued) and the hold becomes what the call used. A hold
//! expires a while after its reservation would be reconciled, so the hold of
//! a call whose process died before its row was written does not count
//! forever.

use crate::audit::Record;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use karen_domain::budget::{Budget, BudgetMetric, BudgetPeriod, BudgetScope, Enforcement};
use karen_domain::chat::{UsageRecord, UsageStatus};
use karen_domain::clock::to_millis;
use karen_domain::permission::Permission;
use karen_domain::ports::{BudgetHold, BudgetReserve, CacheKey, Counters, Reservation, TenantTx};
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
/// How long after its reservation expires a hold still counts: time for the
/// reconciler (every minute) to turn the reservation into a usage record,
/// which then replaces the hold. A hold whose reservation was never written
/// (the process died first) stops counting then.
pub(crate) const HOLD_GRACE: Duration = Duration::from_secs(5 * 60);
/// How long a window's running total is kept after the window ends (for
/// calls that settle after it).
const WINDOW_SLACK: Duration = Duration::from_secs(24 * 3600);
/// Tries to fit a call into one budget whose total other calls keep changing.
const RESERVE_ATTEMPTS: usize = 16;

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
    /// The most completion tokens the hard budgets still allow (`None`: no hard budget applies).
    pub completion_allowance: Option<u32>,
    /// The reservation (`None` when no hard budget applies: nothing was reserved).
    held: Option<Arc<Held>>,
}

impl Grant {
    /// The `max_tokens` to send: the request's, capped by the budgets.
    pub(crate) fn cap(&self, max_tokens: Option<u32>) -> Option<u32> {
        match (max_tokens, self.completion_allowance) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (asked, cap) => asked.or(cap),
        }
    }

    fn unbudgeted() -> Self {
        Self {
            completion_allowance: None,
            held: None,
        }
    }
}

/// One hard budget's part of a reservation: the window it is held in, and how much.
#[derive(Debug, Clone)]
struct Share {
    key: CacheKey,
    metric: BudgetMetric,
    amount: i64,
}

/// Where a reservation's row stands; the usage writer inserts it in a batch
/// after the call began, and whoever settles the call first decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// Waiting in the writer's queue.
    Queued,
    /// In the writer's open transaction; `settled`: the call settled meanwhile.
    Writing { settled: bool },
    /// Committed: settling deletes it.
    Written,
    /// Never to be written (settled while queued, or its batch failed), or settled.
    Absent,
}

/// A reservation held in the running totals of its hard budgets.
pub(crate) struct Held {
    id: ReservationId,
    shares: Vec<Share>,
    counters: Arc<dyn Counters>,
    row: Mutex<Row>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("id", &self.id)
            .field("shares", &self.shares)
            .finish_non_exhaustive()
    }
}

impl Held {
    pub(crate) fn id(&self) -> ReservationId {
        self.id
    }

    fn row(&self) -> std::sync::MutexGuard<'_, Row> {
        self.row.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The call is settling (or released): whether its row was written and
    /// must be deleted by the settlement. A row still queued is never written.
    pub(crate) fn claim_row(&self) -> bool {
        let mut row = self.row();
        match *row {
            Row::Written => {
                *row = Row::Absent;
                true
            }
            Row::Writing { .. } => {
                *row = Row::Writing { settled: true };
                false
            }
            Row::Queued | Row::Absent => {
                *row = Row::Absent;
                false
            }
        }
    }

    /// The usage writer is about to insert the row: `false` if the call
    /// settled first (nothing to insert).
    pub(crate) fn begin_write(&self) -> bool {
        let mut row = self.row();
        if *row == Row::Queued {
            *row = Row::Writing { settled: false };
            true
        } else {
            false
        }
    }

    /// The writer's batch ended (`committed` or not): whether the row must
    /// now be deleted, because the call settled while it was being written.
    pub(crate) fn written(&self, committed: bool) -> bool {
        let mut row = self.row();
        let settled = matches!(*row, Row::Writing { settled: true });
        *row = if committed && !settled {
            Row::Written
        } else {
            Row::Absent
        };
        committed && settled
    }

    /// Replaces the holds with what the call used (`None`: nothing recorded
    /// by this settlement: the call never ran, or was already reconciled).
    /// A failure is logged: the record is durable, the hold expires.
    pub(crate) async fn release(&self, record: Option<&UsageRecord>) {
        let id = self.id.to_string();
        for share in &self.shares {
            let used = record.map_or(0, |r| record_amount(share.metric, r));
            if let Err(error) = self.counters.budget_release(&share.key, &id, 0, used).await {
                tracing::error!(%error, "could not settle a budget hold; it counts until it expires");
            }
        }
    }
}

/// What a usage record counts against a budget of `metric`.
fn record_amount(metric: BudgetMetric, record: &UsageRecord) -> i64 {
    match metric {
        BudgetMetric::Tokens => {
            i64::from(record.prompt_tokens) + i64::from(record.completion_tokens)
        }
        BudgetMetric::CostMicros => record.cost_micros,
    }
}

/// What a reservation holds of a budget of `metric`.
fn reservation_amount(metric: BudgetMetric, reservation: &Reservation) -> i64 {
    match metric {
        BudgetMetric::Tokens => {
            i64::from(reservation.prompt_tokens) + i64::from(reservation.completion_allowance)
        }
        BudgetMetric::CostMicros => reservation.cost_micros,
    }
}

/// The running total of `budget` in the window starting at `from`. A new
/// budget has a new id, so its totals are seeded afresh.
fn window_key(budget: &Budget, from: OffsetDateTime) -> CacheKey {
    CacheKey::tenant(
        budget.tenant_id,
        "budget",
        &format!("{}:{}", budget.id, from.unix_timestamp()),
    )
}

/// When a hold taken at `now` for a reservation expiring at `expires_at` stops counting (ms).
fn hold_expiry(expires_at: OffsetDateTime, now: OffsetDateTime) -> i64 {
    to_millis(expires_at.max(now) + HOLD_GRACE)
}

/// Whether `budget` applies to calls by `user` through `key`.
fn applies(budget: &Budget, user: Option<UserId>, key: Option<ApiKeyId>) -> bool {
    match budget.scope {
        BudgetScope::Tenant => true,
        BudgetScope::User(subject) => Some(subject) == user,
        BudgetScope::ApiKey(subject) => Some(subject) == key,
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

/// `budget_exceeded` for `budget`, naming it and when it resets.
fn exceeded(budget: &Budget, now: OffsetDateTime) -> Error {
    crate::telemetry::budget_rejected(budget.scope);
    let (_, next) = budget.period.window(now);
    Error::BudgetExceeded {
        limit: budget.describe(),
        resets_at: next,
        retry_after: until(now, next),
    }
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

    /// Holds the call's amount on every applicable hard budget and queues
    /// its reservation's row; `budget_exceeded` (naming the limit and when
    /// it resets) if the prompt alone does not fit one of them. A caller no
    /// hard budget applies to reserves nothing (a budget created later binds
    /// from the next call: creating one bumps the cache's epoch).
    pub(crate) async fn reserve(&self, plan: CallPlan<'_>) -> Result<Grant> {
        let (user, key) = subject_of(plan.ctx);
        let applicable = self.applicable(plan.ctx, user, key).await?;
        let (hard, soft): (Vec<Budget>, Vec<Budget>) = applicable
            .into_iter()
            .partition(|b| matches!(b.enforcement, Enforcement::Hard));
        if !soft.is_empty() {
            self.warn_soft(&plan, &soft).await?;
        }
        if hard.is_empty() {
            return Ok(Grant::unbudgeted());
        }
        let now = self.deps.clock.now();
        let id = ReservationId::generate();
        let expires_at = now + RESERVATION_TTL;
        let expires_ms = hold_expiry(expires_at, now);
        let mut completion = if plan.generates {
            plan.max_tokens.unwrap_or(DEFAULT_COMPLETION_ALLOWANCE)
        } else {
            0
        };
        let mut shares: Vec<Share> = Vec::with_capacity(hard.len());
        for budget in &hard {
            match self
                .hold(&plan, budget, id, &mut completion, expires_ms, now)
                .await
            {
                Ok(share) => shares.push(share),
                Err(error) => {
                    self.undo(id, &shares).await;
                    return Err(error);
                }
            }
        }
        // A later budget allowed fewer completion tokens than an earlier one
        // held for: give the earlier ones the difference back.
        for share in &mut shares {
            let amount = self.amount(&plan, share.metric, completion);
            if amount < share.amount {
                let kept = self
                    .deps
                    .counters
                    .budget_release(&share.key, &id.to_string(), amount, 0)
                    .await;
                match kept {
                    Ok(()) => share.amount = amount,
                    Err(error) => {
                        self.undo(id, &shares).await;
                        return Err(error);
                    }
                }
            }
        }
        let reservation = Reservation {
            id,
            tenant_id: plan.ctx.tenant_id(),
            user_id: Some(user),
            api_key_id: key,
            conversation_id: plan.conversation,
            provider: plan.provider.to_owned(),
            model: plan.model.to_owned(),
            prompt_tokens: plan.prompt_tokens,
            completion_allowance: completion,
            cost_micros: self.deps.assistant.cost_micros(
                plan.model,
                plan.prompt_tokens,
                completion,
            ),
            created_at: now,
            expires_at,
        };
        let held = Arc::new(Held {
            id,
            shares,
            counters: self.deps.counters.clone(),
            row: Mutex::new(Row::Queued),
        });
        if let Err(error) = self.writer.reserve(reservation, held.clone()).await {
            self.undo(id, &held.shares).await;
            return Err(error);
        }
        Ok(Grant {
            // What the call may produce is what was reserved, not what the budget could hold.
            completion_allowance: Some(completion),
            held: Some(held),
        })
    }

    /// What a call with `completion` tokens holds of a budget of `metric`.
    fn amount(&self, plan: &CallPlan<'_>, metric: BudgetMetric, completion: u32) -> i64 {
        match metric {
            BudgetMetric::Tokens => i64::from(plan.prompt_tokens) + i64::from(completion),
            BudgetMetric::CostMicros => {
                self.deps
                    .assistant
                    .cost_micros(plan.model, plan.prompt_tokens, completion)
            }
        }
    }

    /// Holds the call's amount on one hard budget's running total, lowering
    /// `completion` to what fits; `budget_exceeded` if not even the prompt does.
    async fn hold(
        &self,
        plan: &CallPlan<'_>,
        budget: &Budget,
        id: ReservationId,
        completion: &mut u32,
        expires_ms: i64,
        now: OffsetDateTime,
    ) -> Result<Share> {
        let (from, next) = budget.period.window(now);
        let key = window_key(budget, from);
        let now_ms = to_millis(now);
        let mut last_refusal = None;
        for _ in 0..RESERVE_ATTEMPTS {
            let amount = self.amount(plan, budget.metric, *completion);
            let hold = BudgetHold {
                id: id.to_string(),
                amount,
                expires_at_ms: expires_ms,
            };
            match self
                .deps
                .counters
                .budget_reserve(&key, &hold, budget.limit, now_ms)
                .await?
            {
                BudgetReserve::Held(_) => {
                    return Ok(Share {
                        key,
                        metric: budget.metric,
                        amount,
                    });
                }
                BudgetReserve::Unseeded => {
                    self.seed(plan.ctx, budget, &key, (from, next), now).await?;
                }
                BudgetReserve::Refused(total) => {
                    // What fits beside the others (`budget_exceeded` when not even the prompt does).
                    let fits = self.assess(plan, budget, total, now)?.unwrap_or(u32::MAX);
                    if plan.generates && fits < *completion {
                        *completion = fits;
                    } else if last_refusal == Some((total, *completion)) {
                        // Refused twice alike: nothing smaller fits.
                        return Err(exceeded(budget, now));
                    }
                    last_refusal = Some((total, *completion));
                }
            }
        }
        // Raced out every time by other calls: refuse, as the budget is all but spent.
        Err(exceeded(budget, now))
    }

    /// Gives back the holds of a reservation that does not go ahead.
    async fn undo(&self, id: ReservationId, shares: &[Share]) {
        let id = id.to_string();
        for share in shares {
            if let Err(error) = self
                .deps
                .counters
                .budget_release(&share.key, &id, 0, 0)
                .await
            {
                tracing::error!(%error, "could not give back a budget hold; it counts until it expires");
            }
        }
    }

    /// Seeds a window's running total from the store unless another call
    /// (on any replica) did: the usage records of the window plus the holds
    /// of its reservations. The reservations are read first: a call that
    /// settles in between is then counted twice until its hold expires,
    /// never missed.
    async fn seed(
        &self,
        ctx: &TenantContext,
        budget: &Budget,
        key: &CacheKey,
        (from, next): (OffsetDateTime, OffsetDateTime),
        now: OffsetDateTime,
    ) -> Result<()> {
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let reservations = tx
            .budgets()
            .window_reservations(budget.scope, from, next)
            .await?;
        let used = tx
            .budgets()
            .recorded_consumption(budget.scope, budget.metric, from, next)
            .await?;
        tx.commit().await?;
        let holds: Vec<BudgetHold> = reservations
            .iter()
            .map(|r| BudgetHold {
                id: r.id.to_string(),
                amount: reservation_amount(budget.metric, r),
                expires_at_ms: hold_expiry(r.expires_at, now),
            })
            .collect();
        let ttl = until(now, next) + WINDOW_SLACK;
        self.deps
            .counters
            .budget_seed(key, used, &holds, ttl)
            .await
            .map(drop)
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
            .filter(|b| applies(b, Some(user), key))
            .cloned()
            .collect())
    }

    /// Soft budgets hold nothing back, but a call over one is logged.
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
            Enforcement::Hard if fits < 1 => Err(exceeded(budget, now)),
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
    /// whatever else the call stores), and the holds with what it used.
    pub(crate) async fn settle(
        tx: &mut dyn TenantTx,
        grant: &Grant,
        record: &UsageRecord,
    ) -> Result<()> {
        let Some(held) = &grant.held else {
            return tx.usage().insert_usage(record).await;
        };
        let recorded = if held.claim_row() {
            tx.budgets().delete_reservation(held.id).await?
        } else {
            true
        };
        if recorded {
            tx.usage().insert_usage(record).await?;
        } else {
            // The reservation outlived its time to live and was already turned
            // into a usage record: recording the call again would charge it twice.
            tracing::warn!(tenant_id = %record.tenant_id, "a call settled after its reservation was reconciled");
        }
        held.release(recorded.then_some(record)).await;
        Ok(())
    }

    /// Replaces the reservation with the call's usage record through the usage
    /// writer (for calls that store nothing else); returns once committed.
    pub(crate) async fn settle_alone(
        &self,
        grant: &Grant,
        record: UsageRecord,
        event: (karen_domain::Actor, crate::audit::Record),
    ) -> Result<()> {
        let Some(held) = &grant.held else {
            return self.writer.write(None, record, event).await.map(drop);
        };
        let recorded = self
            .writer
            .write(Some(held.clone()), record.clone(), event)
            .await?;
        held.release(recorded.then_some(&record)).await;
        Ok(())
    }

    /// Removes a reservation whose call never reached a provider.
    pub(crate) async fn release(&self, ctx: &TenantContext, grant: &Grant) -> Result<()> {
        let Some(held) = &grant.held else {
            return Ok(());
        };
        if held.claim_row() {
            let mut tx = self.deps.store.tenant(ctx.scope()).await?;
            tx.budgets().delete_reservation(held.id).await?;
            tx.commit().await?;
        }
        held.release(None).await;
        Ok(())
    }

    /// Stops the usage writer after committing what it holds (on shutdown).
    pub(crate) async fn stop(&self) {
        self.writer.stop().await;
    }
}

/// Turns the expired reservations of one tenant into usage records of the
/// whole reserved amount (status `interrupted`, counted locally): the calls
/// happened, their outcome is unknown, and the meter must not lose them.
/// Their holds in the running totals become those records.
pub(crate) async fn reconcile_tenant(deps: &Deps, tenant: karen_domain::TenantId) -> Result<usize> {
    let now = deps.clock.now();
    let mut tx = deps
        .store
        .tenant(TenantScope::system(tenant, SystemReason::Lifecycle))
        .await?;
    let expired = tx.budgets().expired_reservations(now).await?;
    if expired.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let budgets = tx.budgets().list_budgets().await?;
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
    for reservation in &expired {
        let id = reservation.id.to_string();
        let hard = budgets.iter().filter(|b| {
            matches!(b.enforcement, Enforcement::Hard)
                && applies(b, reservation.user_id, reservation.api_key_id)
        });
        for budget in hard {
            let (from, _) = budget.period.window(reservation.created_at);
            let used = reservation_amount(budget.metric, reservation);
            if let Err(error) = deps
                .counters
                .budget_release(&window_key(budget, from), &id, 0, used)
                .await
            {
                tracing::error!(%error, tenant_id = %tenant, "could not move a reconciled reservation into its budget's running total");
            }
        }
    }
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
