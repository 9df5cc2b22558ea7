//! Request rate limits: which quotas apply to a principal (platform defaults,
//! then the tenant's plan, then the operator's overrides for the tenant), and
//! applying them through the limiter port, with the configured fail mode when
//! the shared limiter (Redis) cannot be reached.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use karen_domain::clock::to_millis;
use karen_domain::ports::RateLimiter;
use karen_domain::rate_limit::{Decision, Quota, RateLimitScope, RateLimitSubject, RateLimits};
use karen_domain::{Error, Result, Subject, TenantContext, TenantId};

use crate::Deps;
use crate::cache::{EpochCache, Topic};

/// What to do when the shared limiter (Redis) does not answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Limit in process, each replica allowing its share (quota ÷ replicas).
    #[default]
    Local,
    /// Allow every request (uncounted).
    Open,
    /// Refuse every limited request with 503 `service_unavailable`.
    Closed,
}

impl FailMode {
    /// The configured name.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailMode::Local => "local",
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }

    /// Parses a configured name.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "local" => Ok(FailMode::Local),
            "open" => Ok(FailMode::Open),
            "closed" => Ok(FailMode::Closed),
            other => Err(Error::invalid(
                Some("rate_limits.fail_mode"),
                format!("'{other}' is not local, open or closed"),
            )),
        }
    }
}

/// Rate-limit rules (from configuration).
#[derive(Debug, Clone, Default)]
pub struct RateLimitPolicy {
    /// Off: nothing is limited and no headers are sent.
    pub enabled: bool,
    /// Platform defaults, for every tenant.
    pub defaults: RateLimits,
    /// Limits of named plans (a tenant's `plan`), over the defaults.
    pub plans: BTreeMap<String, RateLimits>,
    /// Per client address on the sign-in routes (login, refresh, signup).
    pub auth_ip: Option<Quota>,
    pub fail_mode: FailMode,
    /// Replicas sharing the limits; the in-process fallback allows each its share.
    pub replicas: u32,
}

/// The limiters: `shared` (Redis when scaled out, else in-process) and the
/// in-process one the fallback uses.
#[derive(Clone)]
pub struct RateLimitPorts {
    pub shared: Arc<dyn RateLimiter>,
    /// `None` when `shared` already is in-process (embedded mode).
    pub fallback: Option<Arc<dyn RateLimiter>>,
}

/// The outcome of the limits a request was held against, in the order they
/// were checked; the refusal (if any) is the last.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub checks: Vec<(RateLimitScope, Decision)>,
}

impl Verdict {
    /// The limit that refused the request, if one did.
    pub fn refused(&self) -> Option<(RateLimitScope, Decision)> {
        self.checks.iter().copied().find(|(_, d)| !d.allowed)
    }

    /// The refusal as an error.
    pub fn into_result(self) -> Result<Verdict> {
        match self.refused() {
            Some((scope, decision)) => Err(Error::RateLimited {
                scope,
                retry_after: Duration::from_secs(decision.retry_after_secs()),
            }),
            None => Ok(self),
        }
    }
}

/// Logs "shared limiter unreachable" at most this often.
const LOG_EVERY_MS: i64 = 10_000;
/// After a failure, the shared limiter is not asked again for this long
/// (so a dead Redis does not add its timeout to every request).
const RETRY_SHARED_AFTER_MS: i64 = 1_000;

/// Applies rate limits.
#[derive(Clone)]
pub struct RateLimitService {
    deps: Arc<Deps>,
    limits: Arc<EpochCache<TenantId, RateLimits>>,
    shared_down_until_ms: Arc<AtomicI64>,
    last_logged_ms: Arc<AtomicI64>,
}

impl RateLimitService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        let caching = deps.caching;
        Self {
            deps,
            // Plan changes, overrides and tenant deletion bump the tenant's
            // access epoch: every replica reloads on its next request.
            limits: Arc::new(
                EpochCache::new(
                    "rate_limits",
                    Topic::Access,
                    10_000,
                    Duration::from_secs(60),
                )
                .switched(caching),
            ),
            shared_down_until_ms: Arc::new(AtomicI64::new(0)),
            last_logged_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    fn policy(&self) -> &RateLimitPolicy {
        &self.deps.rate_limits
    }

    /// Whether limits are on.
    pub fn enabled(&self) -> bool {
        self.policy().enabled
    }

    /// The limits that apply to a tenant now (defaults ← plan ← overrides).
    pub async fn effective(&self, tenant: TenantId) -> Result<RateLimits> {
        self.limits
            .get_or_load(self.deps.counters.as_ref(), tenant, tenant, || {
                self.load_limits(tenant)
            })
            .await
    }

    async fn load_limits(&self, tenant: TenantId) -> Result<RateLimits> {
        let mut tx = self.deps.store.platform().await?;
        let record = tx
            .tenant_by_id(tenant)
            .await?
            .ok_or(Error::NotFound("tenant"))?;
        let overrides = tx.rate_limit_overrides(tenant).await?.unwrap_or_default();
        tx.commit().await?;
        let policy = self.policy();
        let plan = policy
            .plans
            .get(record.plan.as_str())
            .copied()
            .unwrap_or_default();
        Ok(overrides.or(plan.or(policy.defaults)))
    }

    /// The operator's overrides of a tenant (empty when none are set).
    pub async fn overrides(&self, tenant: TenantId) -> Result<RateLimits> {
        let mut tx = self.deps.store.platform().await?;
        let overrides = tx
            .rate_limit_overrides(tenant)
            .await?
            .ok_or(Error::NotFound("tenant"))?;
        tx.commit().await?;
        Ok(overrides)
    }

    /// Replaces a tenant's overrides (operator); empty limits remove them.
    pub async fn set_overrides(
        &self,
        actor: karen_domain::Actor,
        tenant: TenantId,
        overrides: RateLimits,
    ) -> Result<()> {
        let mut tx = self.deps.store.platform().await?;
        let before = tx.rate_limit_overrides(tenant).await?;
        let found = tx
            .set_rate_limit_overrides(tenant, &overrides, self.deps.clock.now())
            .await?;
        if !found {
            return Err(Error::NotFound("tenant"));
        }
        let action = if overrides.is_empty() {
            "tenant.rate_limits.clear"
        } else {
            "tenant.rate_limits.update"
        };
        let audit = crate::audit::Record::new(action)
            .target("tenant", tenant)
            .before(&before)
            .after(&overrides);
        self.deps.audit_platform(&mut *tx, actor, audit).await?;
        tx.commit().await?;
        self.deps.access_changed(tenant).await;
        tracing::info!(tenant_id = %tenant, "rate-limit overrides changed");
        Ok(())
    }

    /// Holds an authenticated request against its tenant's limits: the
    /// user's (session) or the API key's, then the tenant's. A request refused
    /// by its own limit does not use up the tenant's.
    pub async fn check_principal(&self, ctx: &TenantContext) -> Result<Verdict> {
        let mut verdict = Verdict::default();
        if !self.enabled() {
            return Ok(verdict);
        }
        let principal = ctx.principal();
        let tenant = principal.tenant_id;
        let limits = self.effective(tenant).await?;
        let own = match principal.subject {
            Subject::User { .. } => RateLimitSubject::User(tenant, principal.user_id),
            Subject::ApiKey { key_id } => RateLimitSubject::ApiKey(tenant, key_id),
        };
        for subject in [own, RateLimitSubject::Tenant(tenant)] {
            let Some(quota) = limits.quota(subject.scope()) else {
                continue;
            };
            let decision = self.acquire(subject, quota).await?;
            verdict.checks.push((subject.scope(), decision));
            if !decision.allowed {
                crate::telemetry::rate_limit_rejected(subject.scope());
                break;
            }
        }
        Ok(verdict)
    }

    /// Holds a request to a sign-in route against its client address's limit.
    pub async fn check_ip(&self, ip: IpAddr) -> Result<Verdict> {
        let mut verdict = Verdict::default();
        let Some(quota) = self.policy().auth_ip.filter(|_| self.enabled()) else {
            return Ok(verdict);
        };
        let subject = RateLimitSubject::Ip(ip);
        let decision = self.acquire(subject, quota).await?;
        if !decision.allowed {
            crate::telemetry::rate_limit_rejected(RateLimitScope::Ip);
        }
        verdict.checks.push((RateLimitScope::Ip, decision));
        Ok(verdict)
    }

    /// One request against the shared limiter, or the fail mode when it is unreachable.
    async fn acquire(&self, subject: RateLimitSubject, quota: Quota) -> Result<Decision> {
        let key = subject.key();
        let ports = &self.deps.rate_limiters;
        let Some(fallback) = &ports.fallback else {
            return ports.shared.acquire(&key, quota).await;
        };
        let now_ms = to_millis(self.deps.clock.now());
        let error = if self.shared_down_until_ms.load(Ordering::Relaxed) > now_ms {
            None
        } else {
            match ports.shared.acquire(&key, quota).await {
                Ok(decision) => return Ok(decision),
                Err(error) => {
                    self.shared_down_until_ms
                        .store(now_ms + RETRY_SHARED_AFTER_MS, Ordering::Relaxed);
                    Some(error)
                }
            }
        };
        let mode = self.policy().fail_mode;
        crate::telemetry::rate_limit_fallback(mode.as_str());
        if let Some(error) = error {
            let last = self.last_logged_ms.load(Ordering::Relaxed);
            if now_ms - last >= LOG_EVERY_MS
                && self
                    .last_logged_ms
                    .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(%error, fail_mode = mode.as_str(), backend = ports.shared.backend(), "shared rate limiter unreachable; applying the fail mode");
            }
        }
        match mode {
            FailMode::Local => {
                fallback
                    .acquire(&key, quota.divided(self.policy().replicas))
                    .await
            }
            FailMode::Open => Ok(Decision::uncounted(quota)),
            FailMode::Closed => Err(Error::Unavailable {
                component: "rate limiter",
                detail:
                    "the shared rate limiter is unreachable and rate_limits.fail_mode is closed"
                        .into(),
            }),
        }
    }
}
