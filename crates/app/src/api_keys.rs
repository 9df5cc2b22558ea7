//! Tenant API keys: shown once, stored hashed, scoped to a subset of the
//! owner's permissions, with optional expiry and a last-used time.

use std::sync::Arc;

use karen_domain::credentials::ApiKeyRecord;
use karen_domain::page::{Page, PageRequest};
use karen_domain::permission::{Permission, PermissionSet};
use karen_domain::values::Label;
use karen_domain::{ApiKeyId, Error, Result, UserId};
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::audit::Record;
use crate::credentials::{self, Kind};
use crate::{Authority, Deps};

/// A key to create.
pub struct NewApiKey {
    pub name: String,
    /// Defaults to every permission the creator holds.
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<OffsetDateTime>,
    /// Whose rights the key carries. Members always create keys for themselves;
    /// the platform (CLI) names the user.
    pub owner: Option<UserId>,
}

/// The API key service.
#[derive(Clone)]
pub struct ApiKeyService {
    deps: Arc<Deps>,
}

impl ApiKeyService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Creates a key; the secret is returned once and never stored.
    pub async fn create(
        &self,
        authority: Authority<'_>,
        request: NewApiKey,
    ) -> Result<(ApiKeyRecord, SecretString)> {
        authority.require(Permission::ApiKeysCreate)?;
        let name = Label::parse(&request.name)?;
        let owner = match (authority.user_id(), request.owner) {
            (Some(me), None) => me,
            (Some(me), Some(other)) if other == me => me,
            (Some(_), Some(_)) => {
                return Err(Error::Forbidden(
                    "API keys can only be created for yourself".into(),
                ));
            }
            (None, Some(owner)) => owner,
            (None, None) => {
                return Err(Error::invalid(
                    Some("user"),
                    "name the user whose key this is",
                ));
            }
        };
        let now = self.deps.clock.now();
        if request.expires_at.is_some_and(|at| at <= now) {
            return Err(Error::invalid(
                Some("expires_at"),
                "expires_at must be in the future",
            ));
        }
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        let user = tx
            .users()
            .user_by_id(owner)
            .await?
            .ok_or(Error::NotFound("user"))?;
        let custom = tx.roles().list_custom_roles().await?;
        // A key may carry at most what its owner holds and what its creator holds.
        let ceiling = karen_domain::user::permissions_of(&user.roles, &custom)
            .intersection(authority.permissions());
        let scopes = match request.scopes {
            Some(names) => PermissionSet::parse_names(&names)?,
            // Recall changes what completions send upstream, and a SCIM key
            // provisions users for an identity provider: only on request.
            None => ceiling
                .without(Permission::ChatRecall)
                .without(Permission::ScimProvision),
        };
        if !scopes.is_subset_of(ceiling) {
            let missing: Vec<&str> = scopes
                .missing_from(ceiling)
                .iter()
                .map(|p| p.as_str())
                .collect();
            return Err(Error::Forbidden(format!(
                "an API key cannot carry permissions its owner does not hold: {}",
                missing.join(", ")
            )));
        }
        let id = ApiKeyId::generate();
        let minted = credentials::mint(
            Kind::ApiKey,
            &[authority.tenant_id().as_uuid(), id.as_uuid()],
        )?;
        let record = ApiKeyRecord {
            id,
            tenant_id: authority.tenant_id(),
            user_id: owner,
            name,
            display_prefix: minted.display_prefix,
            secret_hash: minted.hash,
            scopes,
            expires_at: request.expires_at,
            last_used_at: None,
            revoked_at: None,
            created_at: now,
        };
        tx.api_keys().insert_api_key(&record).await?;
        let scope_names: Vec<&str> = record.scopes.iter().map(|p| p.as_str()).collect();
        let after = serde_json::json!({"name": record.name.as_str(), "user_id": owner,
            "scopes": scope_names, "expires_at": record.expires_at.map(karen_domain::clock::to_millis)});
        let audit = Record::new("api_key.create")
            .target("api_key", id)
            .after(&after);
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        Ok((record, minted.text))
    }

    /// The caller's keys, or every key of the tenant with `all` (needs `apikeys:manage`).
    pub async fn list(
        &self,
        authority: Authority<'_>,
        all: bool,
        page: &PageRequest,
    ) -> Result<Page<ApiKeyRecord>> {
        let filter = if all || authority.user_id().is_none() {
            authority.require(Permission::ApiKeysManage)?;
            None
        } else {
            authority.require(Permission::ApiKeysCreate)?;
            authority.user_id()
        };
        let mut tx = self.deps.store.tenant_read(authority.scope()).await?;
        let rows = tx.api_keys().list_api_keys(filter, page).await?;
        tx.commit().await?;
        Ok(Page::from_rows(rows, page, |k| k.id.as_uuid()))
    }

    async fn visible(
        &self,
        authority: Authority<'_>,
        tx: &mut dyn karen_domain::ports::TenantTx,
        id: ApiKeyId,
    ) -> Result<ApiKeyRecord> {
        let key = tx
            .api_keys()
            .api_key(id)
            .await?
            .ok_or(Error::NotFound("API key"))?;
        let own = authority.user_id() == Some(key.user_id);
        let allowed = if own {
            authority.require(Permission::ApiKeysCreate).is_ok()
        } else {
            authority.require(Permission::ApiKeysManage).is_ok()
        };
        // Someone else's key is indistinguishable from a missing one.
        if allowed {
            Ok(key)
        } else {
            Err(Error::NotFound("API key"))
        }
    }

    /// One key (own, or any with `apikeys:manage`).
    pub async fn get(&self, authority: Authority<'_>, id: ApiKeyId) -> Result<ApiKeyRecord> {
        let mut tx = self.deps.store.tenant_read(authority.scope()).await?;
        let key = self.visible(authority, &mut *tx, id).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// Revokes a key at once (own, or any with `apikeys:manage`).
    pub async fn revoke(&self, authority: Authority<'_>, id: ApiKeyId) -> Result<ApiKeyRecord> {
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        let mut key = self.visible(authority, &mut *tx, id).await?;
        let now = self.deps.clock.now();
        if tx.api_keys().revoke_api_key(id, now).await? {
            key.revoked_at = Some(now);
        }
        let audit = Record::new("api_key.revoke").target("api_key", id);
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        self.deps.access_changed(authority.tenant_id()).await;
        Ok(key)
    }
}
