//! Turning a presented bearer credential into a principal: an access token
//! (JWT), a tenant API key, or a platform operator key. Every check that can
//! revoke access runs on every request: tenant status, user status, session
//! revocation, key revocation and expiry.

use std::sync::Arc;

use karen_domain::credentials::{ApiKeyRecord, OperatorKeyRecord};
use karen_domain::error::AuthFailure;
use karen_domain::permission::PermissionSet;
use karen_domain::ports::TenantTx;
use karen_domain::tenant::Tenant;
use karen_domain::user::{User, UserStatus, permissions_of};
use karen_domain::values::Label;
use karen_domain::{
    ApiKeyId, Error, OperatorKeyId, OperatorPrincipal, Principal, Result, Subject, SystemReason,
    TenantContext, TenantId, TenantScope, UserId,
};
use secrecy::SecretString;

use super::AuthService;
use crate::credentials::{self, Kind};

/// An API key and the principal it stands for, as last read from the store.
#[derive(Clone)]
pub struct KeyGrant {
    key: Arc<ApiKeyRecord>,
    principal: Arc<Principal>,
    last_used_at: Option<time::OffsetDateTime>,
}

fn invalid() -> Error {
    Error::Unauthenticated(AuthFailure::Invalid)
}

/// A member's tenant, user record and permissions from its roles.
pub(crate) async fn load_member(
    tx: &mut dyn TenantTx,
    user_id: UserId,
) -> Result<(Tenant, User, PermissionSet)> {
    // A deleted (or deleting) tenant makes its credentials invalid, not "not found".
    let gone = |e: Error| {
        if matches!(e, Error::NotFound(_)) {
            invalid()
        } else {
            e
        }
    };
    let tenant = tx.tenant().await.map_err(gone)?;
    tenant.ensure_usable().map_err(gone)?;
    let user = tx.users().user_by_id(user_id).await?.ok_or_else(invalid)?;
    if user.status == UserStatus::Disabled {
        return Err(Error::UserDisabled);
    }
    let needs_custom = user
        .roles
        .iter()
        .any(|r| karen_domain::BuiltinRole::from_name(r.as_str()).is_none());
    let custom = if needs_custom {
        tx.roles().list_custom_roles().await?
    } else {
        Vec::new()
    };
    let permissions = permissions_of(&user.roles, &custom);
    Ok((tenant, user, permissions))
}

impl AuthService {
    /// Resolves `Authorization: Bearer <credential>` for tenant routes.
    pub async fn authenticate(&self, bearer: &str) -> Result<TenantContext> {
        let bearer = bearer.trim();
        let ctx = match credentials::kind_of(bearer) {
            Some(Kind::ApiKey) => self.authenticate_api_key(bearer).await,
            // Operator keys, refresh tokens, login steps and password tokens are not access
            // credentials for tenant routes.
            Some(
                Kind::Operator
                | Kind::Refresh
                | Kind::MfaChallenge
                | Kind::SsoState
                | Kind::SamlRelay
                | Kind::PasswordToken,
            ) => Err(invalid()),
            None => self.authenticate_access_token(bearer).await,
        }?;
        let principal = ctx.principal();
        self.deps
            .tenant_series
            .request(principal.tenant_id, principal.tenant_slug.as_str());
        Ok(ctx)
    }

    async fn authenticate_access_token(&self, token: &str) -> Result<TenantContext> {
        let claims = self.deps.tokens.verify(token).await?;
        let scope = TenantScope::system(claims.tenant_id, SystemReason::Authenticate);
        let mut tx = self.deps.store.tenant_read(scope).await?;
        let (tenant, user, permissions) = load_member(&mut *tx, claims.user_id).await?;
        // "Log out everywhere" refuses tokens issued before it (token times are whole seconds).
        if claims.issued_at.unix_timestamp() < user.sessions_valid_after.unix_timestamp() {
            return Err(invalid());
        }
        let session = tx
            .sessions()
            .session(claims.session_id)
            .await?
            .ok_or_else(invalid)?;
        tx.commit().await?;
        if session.revoked_at.is_some() || session.user_id != user.id {
            return Err(invalid());
        }
        Ok(TenantContext::authenticated(Principal {
            tenant_id: tenant.id,
            tenant_slug: tenant.slug,
            user_id: user.id,
            email: user.email,
            subject: Subject::User {
                session_id: session.id,
            },
            roles: user.roles,
            permissions,
        }))
    }

    async fn authenticate_api_key(&self, text: &str) -> Result<TenantContext> {
        let presented = credentials::parse(Kind::ApiKey, text)?;
        let [tenant, key] = presented.ids[..] else {
            return Err(invalid());
        };
        let (tenant, key_id) = (TenantId::from_uuid(tenant), ApiKeyId::from_uuid(key));
        let now = self.deps.clock.now();
        let scope = TenantScope::system(tenant, SystemReason::Authenticate);
        let counters = self.deps.counters.as_ref();
        let grant = self
            .api_keys
            .get_or_load(counters, tenant, key_id, || {
                self.load_key_grant(scope, key_id)
            })
            .await?;
        // The secret and the key's lifetime are checked on every call, cached or not.
        if !presented.matches(&grant.key.secret_hash) || !grant.key.is_live(now) {
            return Err(invalid());
        }
        if grant
            .last_used_at
            .is_none_or(|at| now - at > time::Duration::MINUTE)
        {
            let mut tx = self.deps.store.tenant(scope).await?;
            tx.api_keys().touch_api_key(key_id, now).await?;
            tx.commit().await?;
            self.api_keys
                .update(&key_id, |cached| cached.last_used_at = Some(now));
        }
        Ok(TenantContext::authenticated(
            grant.principal.as_ref().clone(),
        ))
    }

    /// Reads a key and its owner's standing from the store.
    async fn load_key_grant(&self, scope: TenantScope, key_id: ApiKeyId) -> Result<KeyGrant> {
        let mut tx = self.deps.store.tenant_read(scope).await?;
        let key = tx.api_keys().api_key(key_id).await?.ok_or_else(invalid)?;
        let (tenant, user, owner_permissions) = load_member(&mut *tx, key.user_id).await?;
        tx.commit().await?;
        let principal = Principal {
            tenant_id: tenant.id,
            tenant_slug: tenant.slug,
            user_id: user.id,
            email: user.email,
            subject: Subject::ApiKey { key_id },
            roles: user.roles,
            // A key never carries more than its owner holds now.
            permissions: key.scopes.intersection(owner_permissions),
        };
        Ok(KeyGrant {
            last_used_at: key.last_used_at,
            key: Arc::new(key),
            principal: Arc::new(principal),
        })
    }

    /// Resolves an operator key for platform routes.
    pub async fn authenticate_operator(&self, bearer: &str) -> Result<OperatorPrincipal> {
        let presented = credentials::parse(Kind::Operator, bearer.trim())?;
        let [id] = presented.ids[..] else {
            return Err(invalid());
        };
        let id = OperatorKeyId::from_uuid(id);
        let now = self.deps.clock.now();
        let mut tx = self.deps.store.platform().await?;
        let key = tx.operator_key(id).await?.ok_or_else(invalid)?;
        if !presented.matches(&key.secret_hash) || key.revoked_at.is_some() {
            drop(tx);
            // Only a presented id of a real key is recorded: someone holds
            // it. Made-up ids are refused without a write, so guessing
            // cannot flood the platform chain.
            let failed = crate::audit::Record::new("operator.auth.failed")
                .target("operator_key", id)
                .outcome(karen_domain::audit::Outcome::Failure);
            let actor = karen_domain::Actor::System(karen_domain::SystemReason::Authenticate);
            self.deps.audit_platform_after(actor, failed).await;
            return Err(invalid());
        }
        tx.touch_operator_key(id, now).await?;
        tx.commit().await?;
        Ok(OperatorPrincipal { key_id: id })
    }

    /// Creates an operator key; the secret is returned once.
    pub async fn create_operator_key(
        &self,
        actor: karen_domain::Actor,
        name: &str,
    ) -> Result<(OperatorKeyRecord, SecretString)> {
        let id = OperatorKeyId::generate();
        let minted = credentials::mint(Kind::Operator, &[id.as_uuid()])?;
        let record = OperatorKeyRecord {
            id,
            name: Label::parse(name)?,
            secret_hash: minted.hash,
            created_at: self.deps.clock.now(),
            last_used_at: None,
            revoked_at: None,
        };
        let mut tx = self.deps.store.platform().await?;
        tx.insert_operator_key(&record).await?;
        let audit = crate::audit::Record::new("operator_key.create")
            .target("operator_key", id)
            .after(&serde_json::json!({ "name": record.name.as_str() }));
        self.deps.audit_platform(&mut *tx, actor, audit).await?;
        tx.commit().await?;
        Ok((record, minted.text))
    }

    /// On a fresh installation (no operator key at all), creates the first
    /// operator key and returns its secret, to be shown once.
    pub async fn bootstrap_operator_key(&self) -> Result<Option<SecretString>> {
        let mut tx = self.deps.store.platform().await?;
        let existing = tx.list_operator_keys().await?;
        tx.commit().await?;
        if !existing.is_empty() {
            return Ok(None);
        }
        let actor = karen_domain::Actor::System(karen_domain::SystemReason::Lifecycle);
        let (_, secret) = self.create_operator_key(actor, "bootstrap").await?;
        Ok(Some(secret))
    }

    /// Lists operator keys (never their secrets).
    pub async fn list_operator_keys(&self) -> Result<Vec<OperatorKeyRecord>> {
        let mut tx = self.deps.store.platform().await?;
        let keys = tx.list_operator_keys().await?;
        tx.commit().await?;
        Ok(keys)
    }

    /// Revokes an operator key.
    pub async fn revoke_operator_key(
        &self,
        actor: karen_domain::Actor,
        id: OperatorKeyId,
    ) -> Result<()> {
        let mut tx = self.deps.store.platform().await?;
        if !tx.revoke_operator_key(id, self.deps.clock.now()).await? {
            return Err(Error::NotFound("operator key"));
        }
        let audit = crate::audit::Record::new("operator_key.revoke").target("operator_key", id);
        self.deps.audit_platform(&mut *tx, actor, audit).await?;
        tx.commit().await
    }

    /// Makes a new signing key current (`karen keys rotate`).
    pub async fn rotate_signing_key(&self) -> Result<karen_domain::SigningKeyId> {
        self.deps.tokens.rotate().await
    }
}
