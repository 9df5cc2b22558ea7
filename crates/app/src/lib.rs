//! Karen's services. They take ports (store, hasher, tokens, counters, tenant
//! namespaces, clock), never concrete adapters, and hold every business rule:
//! who may do what, to which object, and what happens to the data.

pub mod api_keys;
pub mod assistant;
pub mod audit;
pub mod audit_forward;
pub mod auth;
mod authority;
pub mod cache;
pub mod compliance;
pub mod credentials;
pub mod csv;
pub mod encryption;
pub mod health;
pub mod insights;
pub mod memory;
pub mod privacy;
pub mod rate_limits;
pub mod retention;
pub mod roles;
pub mod scim;
pub mod sso;
pub mod telemetry;
pub mod tenants;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use karen_domain::clock::Clock;
use karen_domain::ports::{
    AccessTokens, Counters, ModelRouter, PasswordHasher, Store, TenantNamespace,
};

pub use authority::Authority;

/// Authentication rules (from configuration).
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// Lifetime of an access token (default 15 minutes).
    pub access_token_ttl: Duration,
    /// Lifetime of a session and its refresh tokens (default 30 days).
    pub session_ttl: Duration,
    /// A session whose refresh token goes unused this long ends (default 72 hours).
    pub session_idle_timeout: Duration,
    /// Failed logins after which each further attempt must wait (doubling).
    pub delay_after_failures: i32,
    /// Longest wait between attempts before the lockout.
    pub max_delay: Duration,
    /// Failed logins that lock the account.
    pub lockout_after_failures: i32,
    /// How long a lockout lasts.
    pub lockout_duration: Duration,
    /// Failed logins from one IP address within `ip_window` before that address is refused.
    pub ip_max_failures: u64,
    /// The window of the per-IP count.
    pub ip_window: Duration,
    /// Whether anyone may create a tenant through `POST /v1/signup`.
    pub self_signup: bool,
    /// How long a password setup or reset token stays usable (default 24 hours).
    pub password_setup_ttl: Duration,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            session_idle_timeout: Duration::from_secs(72 * 3600),
            delay_after_failures: 3,
            max_delay: Duration::from_secs(60),
            lockout_after_failures: 10,
            lockout_duration: Duration::from_secs(15 * 60),
            ip_max_failures: 50,
            ip_window: Duration::from_secs(15 * 60),
            self_signup: false,
            password_setup_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// What every service needs.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub tokens: Arc<dyn AccessTokens>,
    pub counters: Arc<dyn Counters>,
    /// Stores outside SQL that hold per-tenant state (provisioned on tenant
    /// creation, destroyed on deletion).
    pub namespaces: Vec<Arc<dyn TenantNamespace>>,
    pub policy: AuthPolicy,
    /// Resolves model names to the tenant's providers.
    pub router: Arc<dyn ModelRouter>,
    pub assistant: assistant::AssistantPolicy,
    /// Per-tenant request, token and cost counts for the metrics.
    pub tenant_series: Arc<telemetry::TenantSeries>,
    /// Indexes, embedder and document reader of memory and retrieval.
    pub search: memory::SearchPorts,
    /// The process's insight collector and the configured model chains.
    pub insights: insights::InsightPorts,
    /// Request rate limits (from configuration) and the limiters that apply them.
    pub rate_limits: rate_limits::RateLimitPolicy,
    pub rate_limiters: rate_limits::RateLimitPorts,
    /// The tamper-evident audit trail every service records into.
    pub audit: Arc<audit::AuditTrail>,
    /// Platform facts the compliance reports show.
    pub compliance: compliance::PlatformFacts,
    /// Platform retention defaults and the audit minimum.
    pub retention: retention::RetentionSettings,
    /// Single sign-on: the OIDC client and Karen's public URL.
    pub sso: sso::SsoPorts,
    /// Whether the in-process caches and the embedding cache are used.
    pub caching: cache::Caching,
}

impl Deps {
    /// Marks the tenant's cached credentials and permissions stale on every
    /// replica (after the change committed).
    pub(crate) async fn access_changed(&self, tenant: karen_domain::TenantId) {
        cache::invalidate(self.counters.as_ref(), tenant, cache::Topic::Access).await;
    }

    /// Appends an audit event in `tx`, the transaction of the action.
    pub(crate) async fn audit(
        &self,
        tx: &mut dyn karen_domain::ports::TenantTx,
        actor: karen_domain::Actor,
        record: audit::Record,
    ) -> karen_domain::Result<()> {
        self.audit.record(tx, actor, record).await.map(drop)
    }

    /// Appends an event to the platform chain in `tx`, the platform
    /// transaction of the operator action.
    pub(crate) async fn audit_platform(
        &self,
        tx: &mut dyn karen_domain::ports::PlatformTx,
        actor: karen_domain::Actor,
        record: audit::Record,
    ) -> karen_domain::Result<()> {
        self.audit
            .record_platform(tx, actor, record)
            .await
            .map(drop)
    }

    /// Records a platform event after the action committed elsewhere (its
    /// tenant's chain holds the action atomically): a failure is logged and
    /// counted, never turned into an error of the finished action.
    pub(crate) async fn audit_platform_after(
        &self,
        actor: karen_domain::Actor,
        record: audit::Record,
    ) {
        if let Err(error) = self.audit.record_platform_alone(actor, record).await {
            metrics::counter!(audit::PLATFORM_WRITE_FAILURES_METRIC).increment(1);
            tracing::error!(%error, "could not record an operator action in the platform audit chain");
        }
    }

    /// Records a read of tenant content in a transaction of its own.
    pub(crate) async fn audit_read(
        &self,
        scope: karen_domain::TenantScope,
        record: audit::Record,
    ) -> karen_domain::Result<()> {
        self.audit
            .record_alone(scope, scope.actor(), record)
            .await
            .map(drop)
    }

    /// Marks the tenant's cached budgets stale on every replica (a new hard
    /// budget binds from the next call).
    pub(crate) async fn budgets_changed(&self, tenant: karen_domain::TenantId) {
        cache::invalidate(self.counters.as_ref(), tenant, cache::Topic::Budgets).await;
    }

    /// Marks the tenant's cached model routes stale on every replica.
    pub(crate) async fn routes_changed(&self, tenant: karen_domain::TenantId) {
        cache::invalidate(self.counters.as_ref(), tenant, cache::Topic::Routes).await;
    }
}

/// All services, built once and shared by the HTTP layer and the CLI.
#[derive(Clone)]
pub struct Services {
    pub auth: auth::AuthService,
    pub tenants: tenants::TenantService,
    pub users: users::UserService,
    pub roles: roles::RoleService,
    pub api_keys: api_keys::ApiKeyService,
    pub health: health::HealthService,
    pub assistant: assistant::AssistantServices,
    pub memory: memory::MemoryServices,
    pub insights: insights::InsightService,
    pub rate_limits: rate_limits::RateLimitService,
    pub retention: retention::RetentionService,
    pub audit: Arc<audit::AuditTrail>,
    pub compliance: compliance::ComplianceService,
    pub privacy: privacy::PrivacyService,
    pub scim: scim::ScimService,
    pub sso: sso::SsoService,
    clock: Arc<dyn Clock>,
    tenant_series: Arc<telemetry::TenantSeries>,
}

impl Services {
    /// The per-tenant metric series.
    pub fn tenant_series(&self) -> &telemetry::TenantSeries {
        &self.tenant_series
    }

    /// The clock every service reads.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Builds every service over the same dependencies.
    pub fn new(deps: Deps) -> Self {
        let deps = Arc::new(deps);
        let memory = memory::MemoryServices::new(deps.clone());
        let auth = auth::AuthService::new(deps.clone());
        Self {
            clock: deps.clock.clone(),
            audit: deps.audit.clone(),
            tenant_series: deps.tenant_series.clone(),
            sso: sso::SsoService::new(deps.clone(), auth.clone()),
            auth,
            tenants: tenants::TenantService::new(deps.clone()),
            users: users::UserService::new(deps.clone()),
            roles: roles::RoleService::new(deps.clone()),
            api_keys: api_keys::ApiKeyService::new(deps.clone()),
            health: health::HealthService::new(deps.clone()),
            insights: insights::InsightService::new(deps.clone()),
            rate_limits: rate_limits::RateLimitService::new(deps.clone()),
            compliance: compliance::ComplianceService::new(deps.clone()),
            privacy: privacy::PrivacyService::new(deps.clone(), memory.indexer.clone()),
            scim: scim::ScimService::new(deps.clone()),
            assistant: assistant::AssistantServices::new(deps.clone(), &memory),
            retention: retention::RetentionService::new(deps.clone(), memory.indexer.clone()),
            memory,
        }
    }
}
