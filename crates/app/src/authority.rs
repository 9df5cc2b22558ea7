//! On whose authority a tenant operation runs: a tenant principal (checked
//! against its permissions, and never allowed to grant more than it holds) or
//! the platform operator / local CLI (unrestricted within the tenant).

use karen_domain::permission::{Permission, PermissionSet};
use karen_domain::{Actor, Error, Result, TenantContext, TenantId, TenantScope, UserId};

/// The authority of a tenant operation.
#[derive(Debug, Clone, Copy)]
pub enum Authority<'a> {
    /// A user or API key of the tenant.
    Member(&'a TenantContext),
    /// The platform operator or the local CLI, acting on one tenant.
    Platform {
        tenant: TenantId,
        scope: TenantScope,
    },
}

impl<'a> Authority<'a> {
    /// The platform acting on `tenant` through `scope` (which must be that tenant's).
    pub fn platform(scope: TenantScope) -> Self {
        Authority::Platform {
            tenant: scope.tenant_id(),
            scope,
        }
    }

    /// The store scope to open.
    pub fn scope(&self) -> TenantScope {
        match self {
            Authority::Member(ctx) => ctx.scope(),
            Authority::Platform { scope, .. } => *scope,
        }
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        match self {
            Authority::Member(ctx) => ctx.tenant_id(),
            Authority::Platform { tenant, .. } => *tenant,
        }
    }

    /// What this authority may do (everything, for the platform).
    pub fn permissions(&self) -> PermissionSet {
        match self {
            Authority::Member(ctx) => ctx.principal().permissions,
            Authority::Platform { .. } => PermissionSet::all(),
        }
    }

    /// Fails with `permission_denied` unless the authority holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<()> {
        match self {
            Authority::Member(ctx) => ctx.require(permission),
            Authority::Platform { .. } => Ok(()),
        }
    }

    /// The acting user, if a member.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Authority::Member(ctx) => Some(ctx.principal().user_id),
            Authority::Platform { .. } => None,
        }
    }

    /// The actor, for the audit trail.
    pub fn actor(&self) -> Actor {
        self.scope().actor()
    }

    /// Refuses to grant (or act on someone holding) permissions beyond one's own.
    pub fn ensure_within(&self, wanted: PermissionSet, what: &str) -> Result<()> {
        let missing = wanted.missing_from(self.permissions());
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|p| p.as_str()).collect();
        Err(Error::Forbidden(format!(
            "{what} needs permissions you do not hold: {}",
            names.join(", ")
        )))
    }
}
