//! Who is acting. The tenant of every request comes from here, never from a
//! header, body or query parameter (tenancy rule 2).

use crate::permission::{Permission, PermissionSet};
use crate::values::{Email, RoleName, Slug};
use crate::{ApiKeyId, Error, OperatorKeyId, SessionId, TenantId, UserId};

/// How the principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A user with an access token of one session.
    User { session_id: SessionId },
    /// An API key acting for its owner (with a subset of the owner's rights).
    ApiKey { key_id: ApiKeyId },
}

/// An authenticated user or API key of one tenant.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub tenant_slug: Slug,
    pub user_id: UserId,
    pub email: Email,
    pub subject: Subject,
    pub roles: Vec<RoleName>,
    /// The effective permissions (for an API key: its scopes ∩ its owner's rights).
    pub permissions: PermissionSet,
}

impl Principal {
    /// Fails with `permission_denied` unless the principal holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), Error> {
        if self.permissions.contains(permission) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(permission))
        }
    }

    /// The actor recorded for what this principal does.
    pub fn actor(&self) -> Actor {
        match self.subject {
            Subject::User { .. } => Actor::User(self.user_id),
            Subject::ApiKey { key_id } => Actor::ApiKey {
                key_id,
                user_id: self.user_id,
            },
        }
    }
}

/// The authenticated context of a tenant request; the only way a handler reaches
/// tenant data.
#[derive(Debug, Clone)]
pub struct TenantContext {
    principal: Principal,
}

impl TenantContext {
    /// Built by the authentication service from a verified credential.
    pub fn authenticated(principal: Principal) -> Self {
        Self { principal }
    }

    /// The principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.principal.tenant_id
    }

    /// Fails with `permission_denied` unless the principal holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), Error> {
        self.principal.require(permission)
    }

    /// The scope under which this context may open the tenant's store.
    pub fn scope(&self) -> TenantScope {
        TenantScope {
            tenant_id: self.principal.tenant_id,
            actor: self.principal.actor(),
        }
    }
}

/// Why the system (not a principal) opens a tenant's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemReason {
    /// Checking a password before there is a principal.
    Login,
    /// Exchanging a refresh token.
    TokenRefresh,
    /// Resolving a presented credential to a principal.
    Authenticate,
    /// Creating or removing a tenant.
    Lifecycle,
    /// An operator command run on the server's own machine (`karen …`).
    Cli,
    /// Resolving which providers serve a model for the tenant.
    Routing,
    /// Keeping the search indexes in step with the store (re-embedding jobs).
    Indexing,
    /// Sending copies of the audit trail to an external collector.
    AuditForwarding,
    /// Deleting data older than the tenant's retention policy.
    Retention,
    /// Writing the usage records of settled model calls (the usage writer).
    Metering,
}

/// Who performed an action (recorded in the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    User(UserId),
    ApiKey { key_id: ApiKeyId, user_id: UserId },
    Operator(OperatorKeyId),
    System(SystemReason),
}

/// Permission to open one tenant's data. Obtained from a [`TenantContext`], or by
/// the system for a named reason; stores accept nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantScope {
    tenant_id: TenantId,
    actor: Actor,
}

impl TenantScope {
    /// A scope for system work on `tenant_id` (login, refresh, lifecycle, CLI).
    pub fn system(tenant_id: TenantId, reason: SystemReason) -> Self {
        Self {
            tenant_id,
            actor: Actor::System(reason),
        }
    }

    /// A scope for the platform operator acting on one tenant.
    pub fn operator(tenant_id: TenantId, key: OperatorKeyId) -> Self {
        Self {
            tenant_id,
            actor: Actor::Operator(key),
        }
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// Who acts.
    pub fn actor(&self) -> Actor {
        self.actor
    }
}

/// The platform operator (creates and removes tenants; holds no tenant role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorPrincipal {
    pub key_id: OperatorKeyId,
}

impl OperatorPrincipal {
    /// The actor recorded for what the operator does.
    pub fn actor(&self) -> Actor {
        Actor::Operator(self.key_id)
    }
}
