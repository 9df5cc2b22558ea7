//! Tenant lifecycle (platform operator): create with an owner account and a
//! namespace in every store, suspend, resume, and delete everything.

use std::sync::Arc;

use karen_domain::credentials::PasswordTokenPurpose;
use karen_domain::page::{Page, PageRequest};
use karen_domain::permission::{BuiltinRole, Permission};
use karen_domain::ports::PurgeReport;
use karen_domain::tenant::{Tenant, TenantSettings, TenantStatus};
use karen_domain::user::{LoginFailures, Password, User, UserStatus};
use karen_domain::values::{DisplayName, Email, PlanName, RoleName, Slug, TenantName};
use karen_domain::{
    Actor, Error, Result, SystemReason, TenantContext, TenantId, TenantScope, UserId,
};

use crate::Deps;
use crate::audit::Record;
use crate::auth::{PasswordSetup, check_new_password, issue_password_token};
use crate::users::user_json;

/// What the operator (or a self-service signup) supplies to create a tenant.
pub struct NewTenant {
    pub slug: String,
    pub name: String,
    pub plan: Option<String>,
    pub owner_email: String,
    pub owner_name: Option<String>,
    /// If absent, the owner gets no usable password but a password setup
    /// token, returned once.
    pub owner_password: Option<Password>,
}

/// A created tenant and its owner.
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub owner: User,
    /// The owner's password setup token, when no password was given (shown once).
    pub password_setup: Option<PasswordSetup>,
}

/// What a deletion removed.
#[derive(Debug, Clone)]
pub struct DeletionReport {
    pub tenant_id: TenantId,
    pub rows: PurgeReport,
    pub namespaces: Vec<&'static str>,
}

/// Changes the operator may make to a tenant.
#[derive(Default)]
pub struct TenantChanges {
    pub name: Option<String>,
    pub plan: Option<String>,
}

/// Changes a tenant admin may make to its own tenant.
#[derive(Default)]
pub struct ProfileChanges {
    pub name: Option<String>,
    pub settings: Option<TenantSettings>,
}

/// The tenant service.
#[derive(Clone)]
pub struct TenantService {
    deps: Arc<Deps>,
}

const DEFAULT_PLAN: &str = "free";

impl TenantService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Creates a tenant with its owner and provisions it in every store. If any
    /// step fails, what was created is removed again. `actor` (the operator,
    /// or the system for a signup or the CLI) is recorded in the platform
    /// chain with the registry row.
    pub async fn create(&self, actor: Actor, request: NewTenant) -> Result<CreatedTenant> {
        let slug = Slug::parse(request.slug.trim())?;
        let name = TenantName::parse(&request.name)?;
        let plan = PlanName::parse(request.plan.as_deref().unwrap_or(DEFAULT_PLAN))?;
        let email = Email::parse(&request.owner_email)?;
        let display_name = request
            .owner_name
            .as_deref()
            .map(DisplayName::parse)
            .transpose()?;
        let password_hash = match &request.owner_password {
            Some(password) => {
                check_new_password(password, slug.as_str(), name.as_str(), &email)?;
                // Hash before writing anything: the slow step must not widen
                // the window in which a half-created tenant exists.
                Some(self.deps.hasher.hash(password).await?)
            }
            None => None,
        };
        let now = self.deps.clock.now();
        let tenant = Tenant {
            id: TenantId::generate(),
            slug,
            name,
            plan,
            status: TenantStatus::Active,
            settings: TenantSettings::default(),
            created_at: now,
            updated_at: now,
        };
        let mut platform = self.deps.store.platform().await?;
        platform.insert_tenant(&tenant).await?;
        let created = Record::new("tenant.create")
            .target("tenant", tenant.id)
            .after(&tenant_json(&tenant));
        self.deps
            .audit_platform(&mut *platform, actor, created)
            .await?;
        platform.commit().await?;

        let owner = User {
            id: UserId::generate(),
            tenant_id: tenant.id,
            email,
            display_name,
            status: UserStatus::Active,
            roles: vec![RoleName::parse(BuiltinRole::Owner.name())?],
            password_hash,
            login_failures: LoginFailures::default(),
            sessions_valid_after: now,
            last_login_at: None,
            created_at: now,
            updated_at: now,
        };
        let password_setup = match self.provision(actor, &tenant, &owner).await {
            Ok(setup) => setup,
            Err(error) => {
                tracing::error!(tenant_id = %tenant.id, %error, "tenant creation failed; removing what was created");
                let cleaner = Actor::System(SystemReason::Lifecycle);
                if let Err(cleanup) = self.delete(cleaner, tenant.id).await {
                    tracing::error!(tenant_id = %tenant.id, error = %cleanup, "cleanup of a failed tenant creation failed; run `karen tenant delete`");
                }
                return Err(error);
            }
        };
        tracing::info!(tenant_id = %tenant.id, slug = %tenant.slug, "tenant created");
        Ok(CreatedTenant {
            tenant,
            owner,
            password_setup,
        })
    }

    /// Provisions the stores and writes the owner; an owner without a
    /// password gets a setup token issued by `actor`.
    async fn provision(
        &self,
        actor: Actor,
        tenant: &Tenant,
        owner: &User,
    ) -> Result<Option<PasswordSetup>> {
        for namespace in &self.deps.namespaces {
            namespace.provision(tenant.id).await?;
        }
        let mut tx = self
            .deps
            .store
            .tenant(TenantScope::system(tenant.id, SystemReason::Lifecycle))
            .await?;
        tx.users().insert_user(owner).await?;
        let issuer = actor;
        let actor = karen_domain::Actor::System(SystemReason::Lifecycle);
        let created = Record::new("tenant.create")
            .target("tenant", tenant.id)
            .after(&tenant_json(tenant));
        self.deps.audit(&mut *tx, actor, created).await?;
        let owner_created = Record::new("user.create")
            .target("user", owner.id)
            .after(&user_json(owner));
        self.deps.audit(&mut *tx, actor, owner_created).await?;
        let setup = match owner.password_hash {
            Some(_) => None,
            None => Some(
                issue_password_token(
                    &self.deps,
                    &mut *tx,
                    owner.id,
                    PasswordTokenPurpose::Setup,
                    issuer,
                )
                .await?,
            ),
        };
        tx.commit().await?;
        Ok(setup)
    }

    /// Self-service signup (when enabled): a new tenant on the default plan.
    pub async fn signup(&self, request: NewTenant) -> Result<CreatedTenant> {
        if !self.deps.policy.self_signup {
            return Err(Error::FeatureDisabled("self_signup"));
        }
        if request.owner_password.is_none() {
            return Err(Error::invalid(
                Some("password"),
                "a password is required to sign up",
            ));
        }
        let actor = Actor::System(SystemReason::Lifecycle);
        self.create(
            actor,
            NewTenant {
                plan: None,
                ..request
            },
        )
        .await
    }

    /// One page of tenants.
    pub async fn list(&self, page: &PageRequest) -> Result<Page<Tenant>> {
        let mut tx = self.deps.store.platform().await?;
        let rows = tx.list_tenants(page).await?;
        tx.commit().await?;
        Ok(Page::from_rows(rows, page, |t| t.id.as_uuid()))
    }

    /// A tenant by id.
    pub async fn get(&self, id: TenantId) -> Result<Tenant> {
        let mut tx = self.deps.store.platform().await?;
        let tenant = tx
            .tenant_by_id(id)
            .await?
            .ok_or(Error::NotFound("tenant"))?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// A tenant by id or slug (for the CLI).
    pub async fn find(&self, id_or_slug: &str) -> Result<Tenant> {
        let mut tx = self.deps.store.platform().await?;
        let tenant = match TenantId::parse(id_or_slug) {
            Ok(id) => tx.tenant_by_id(id).await?,
            Err(_) => tx.tenant_by_slug(&Slug::parse(id_or_slug)?).await?,
        };
        tx.commit().await?;
        tenant.ok_or(Error::NotFound("tenant"))
    }

    /// Opens the tenant's store for an operator change of its registry row.
    async fn lifecycle_tx(
        &self,
        id: TenantId,
    ) -> Result<(Box<dyn karen_domain::ports::TenantTx>, Tenant)> {
        let mut tx = self
            .deps
            .store
            .tenant(TenantScope::system(id, SystemReason::Lifecycle))
            .await?;
        let tenant = tx.tenant().await?;
        Ok((tx, tenant))
    }

    async fn set_status(&self, actor: Actor, id: TenantId, status: TenantStatus) -> Result<Tenant> {
        let (mut tx, mut tenant) = self.lifecycle_tx(id).await?;
        if tenant.status == TenantStatus::Deleting {
            return Err(Error::Conflict("the tenant is being deleted".into()));
        }
        let before = tenant_json(&tenant);
        tenant.status = status;
        tenant.updated_at = self.deps.clock.now();
        tx.update_tenant_registry(&tenant).await?;
        let action = if status == TenantStatus::Suspended {
            "tenant.suspend"
        } else {
            "tenant.resume"
        };
        let audit = Record::new(action)
            .target("tenant", id)
            .before(&before)
            .after(&tenant_json(&tenant));
        self.deps.audit(&mut *tx, actor, audit.clone()).await?;
        tx.commit().await?;
        self.deps.audit_platform_after(actor, audit).await;
        self.deps.access_changed(id).await;
        tracing::info!(tenant_id = %id, status = status.as_str(), "tenant status changed");
        Ok(tenant)
    }

    /// Suspends a tenant: its users and keys are refused until resumed.
    pub async fn suspend(&self, actor: Actor, id: TenantId) -> Result<Tenant> {
        self.set_status(actor, id, TenantStatus::Suspended).await
    }

    /// Resumes a suspended tenant.
    pub async fn resume(&self, actor: Actor, id: TenantId) -> Result<Tenant> {
        self.set_status(actor, id, TenantStatus::Active).await
    }

    /// Changes a tenant's name or plan (operator).
    pub async fn update(
        &self,
        actor: Actor,
        id: TenantId,
        changes: TenantChanges,
    ) -> Result<Tenant> {
        let (mut tx, mut tenant) = self.lifecycle_tx(id).await?;
        let before = tenant_json(&tenant);
        if let Some(name) = changes.name {
            tenant.name = TenantName::parse(&name)?;
        }
        if let Some(plan) = changes.plan {
            tenant.plan = PlanName::parse(&plan)?;
        }
        tenant.updated_at = self.deps.clock.now();
        tx.update_tenant_registry(&tenant).await?;
        let audit = Record::new("tenant.update")
            .target("tenant", id)
            .before(&before)
            .after(&tenant_json(&tenant));
        self.deps.audit(&mut *tx, actor, audit.clone()).await?;
        tx.commit().await?;
        self.deps.audit_platform_after(actor, audit).await;
        self.deps.access_changed(id).await;
        Ok(tenant)
    }

    /// Deletes a tenant and all its data from every store, irreversibly. Safe
    /// to repeat: an interrupted deletion resumes where it stopped. The
    /// platform chain records the decision (`tenant.delete`, with the
    /// status change) and the completion (`tenant.delete.completed`, with
    /// the registry row's removal and the counts of rows removed): the
    /// tenant's own chain is purged with it.
    pub async fn delete(&self, actor: Actor, id: TenantId) -> Result<DeletionReport> {
        let mut tx = self.deps.store.platform().await?;
        let mut tenant = tx
            .tenant_by_id(id)
            .await?
            .ok_or(Error::NotFound("tenant"))?;
        let before = tenant_json(&tenant);
        tenant.status = TenantStatus::Deleting;
        tenant.updated_at = self.deps.clock.now();
        tx.update_tenant(&tenant).await?;
        let decided = Record::new("tenant.delete")
            .target("tenant", id)
            .before(&before)
            .after(&tenant_json(&tenant));
        self.deps.audit_platform(&mut *tx, actor, decided).await?;
        tx.commit().await?;
        // Cached credentials stop matching now; once the counters are purged
        // below, the epoch reads 0, under which nothing is ever cached.
        self.deps.access_changed(id).await;

        let mut tenant_tx = self
            .deps
            .store
            .tenant(TenantScope::system(id, SystemReason::Lifecycle))
            .await?;
        let rows = tenant_tx.purge().await?;
        tenant_tx.commit().await?;
        let mut namespaces = Vec::new();
        for namespace in &self.deps.namespaces {
            namespace.destroy(id).await?;
            if namespace.holds_data(id).await? {
                return Err(Error::internal(format!(
                    "{} still holds data of tenant {id}",
                    namespace.name()
                )));
            }
            namespaces.push(namespace.name());
        }
        let mut tx = self.deps.store.platform().await?;
        // The registry row goes last; foreign keys refuse it while any data remains.
        tx.delete_tenant(id).await?;
        let removed: u64 = rows.rows_by_table.iter().map(|(_, n)| n).sum();
        let completed = Record::new("tenant.delete.completed")
            .target("tenant", id)
            .after(&serde_json::json!({
                "slug": tenant.slug.as_str(),
                "rows_removed": removed,
                "namespaces": namespaces,
            }));
        self.deps.audit_platform(&mut *tx, actor, completed).await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %id, "tenant deleted");
        Ok(DeletionReport {
            tenant_id: id,
            rows,
            namespaces,
        })
    }

    /// The principal's own tenant.
    pub async fn own(&self, ctx: &TenantContext) -> Result<Tenant> {
        ctx.require(Permission::TenantRead)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let tenant = tx.tenant().await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Changes the principal's own tenant's name or settings.
    pub async fn update_own(&self, ctx: &TenantContext, changes: ProfileChanges) -> Result<Tenant> {
        ctx.require(Permission::TenantManage)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let mut tenant = tx.tenant().await?;
        let before = tenant_json(&tenant);
        if let Some(name) = changes.name {
            tenant.name = TenantName::parse(&name)?;
        }
        let mut jobs_changed = false;
        if let Some(settings) = changes.settings {
            settings.validate()?;
            jobs_changed = crate::memory::models::plan_model_change(
                &self.deps,
                tx.as_mut(),
                settings.embedding_model.as_deref(),
            )
            .await?;
            let role = &settings.default_role;
            if BuiltinRole::from_name(role.as_str()).is_none()
                && tx.roles().custom_role(role).await?.is_none()
            {
                return Err(Error::invalid(
                    Some("settings.default_role"),
                    format!(
                        "there is no role named '{}'",
                        karen_domain::values::printable(role.as_ref(), 64)
                    ),
                ));
            }
            if settings.sso_required && !tenant.settings.sso_required {
                let mut enabled = false;
                for kind in [
                    karen_domain::sso::SsoKind::Oidc,
                    karen_domain::sso::SsoKind::Saml,
                ] {
                    enabled |= tx.sso().connection(kind).await?.is_some_and(|c| c.enabled);
                }
                if !enabled {
                    return Err(Error::invalid(
                        Some("settings.sso_required"),
                        "single sign-on cannot be required before an enabled connection exists; configure PUT /v1/tenant/sso/oidc or /v1/tenant/sso/saml first",
                    ));
                }
            }
            tenant.settings = settings;
        }
        tenant.updated_at = self.deps.clock.now();
        tx.update_tenant_profile(&tenant.name, &tenant.settings, tenant.updated_at)
            .await?;
        let audit = Record::new("tenant.settings.update")
            .target("tenant", tenant.id)
            .before(&before)
            .after(&tenant_json(&tenant));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        self.deps.access_changed(ctx.tenant_id()).await;
        if jobs_changed {
            crate::cache::invalidate(
                self.deps.counters.as_ref(),
                ctx.tenant_id(),
                crate::cache::Topic::Embedding,
            )
            .await;
            self.deps.search.jobs.wake(ctx.tenant_id());
        }
        Ok(tenant)
    }
}

/// A tenant as recorded in audit diffs.
fn tenant_json(tenant: &Tenant) -> serde_json::Value {
    serde_json::json!({
        "slug": tenant.slug.as_str(),
        "name": tenant.name.as_str(),
        "plan": tenant.plan.as_str(),
        "status": tenant.status.as_str(),
        "settings": serde_json::to_value(&tenant.settings).ok(),
    })
}

/// The id of every tenant in the registry, for background jobs that visit
/// each tenant in turn.
pub(crate) async fn all_tenant_ids(
    store: &dyn karen_domain::ports::Store,
) -> Result<Vec<TenantId>> {
    let mut ids = Vec::new();
    let mut page = PageRequest {
        after: None,
        limit: karen_domain::page::MAX_LIMIT,
    };
    loop {
        let mut platform = store.platform().await?;
        let tenants = platform.list_tenants(&page).await?;
        platform.commit().await?;
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        let more = tenants.len() > limit;
        ids.extend(tenants.iter().take(limit).map(|t| t.id));
        match (more, ids.last()) {
            (true, Some(last)) => page.after = Some(last.as_uuid()),
            _ => return Ok(ids),
        }
    }
}
