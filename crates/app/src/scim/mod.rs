//! SCIM 2.0 provisioning: an identity provider (Okta, Entra ID…) creates,
//! changes, deactivates and deletes the tenant's users and groups through
//! `/scim/v2`, with an API key carrying `scim:provision`.
//!
//! The key acts with its owner's rights: it never creates, changes or
//! deprovisions a user holding permissions its owner lacks, nor grants such a
//! role. Deprovisioning (`active: false` or DELETE) disables the account and
//! ends its sessions in the same transaction. A group whose display name is a
//! role's name grants that role to its members; the role goes again with the
//! last such group, unless the user held it before a group granted it.

mod groups;
mod users;

use std::sync::Arc;

use karen_domain::permission::{BuiltinRole, Permission, PermissionSet};
use karen_domain::ports::TenantTx;
use karen_domain::scim::{ScimErrorType, ScimGroup, ScimUserRecord, etag};
use karen_domain::user::{User, UserStatus, permissions_of};
use karen_domain::values::RoleName;
use karen_domain::{Error, Result, TenantContext, UserId};
use time::OffsetDateTime;

use crate::Deps;
use crate::audit::Record;

/// Which page of a list to return (already normalised: 1-based start, count ≤ max).
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// A SCIM filter (`userName eq "…"`), if any.
    pub filter: Option<String>,
    pub start_index: i64,
    pub count: i64,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ScimList<T> {
    pub total: i64,
    pub start_index: i64,
    pub items: Vec<T>,
}

impl<T> ScimList<T> {
    /// The page of `all` the query asks for.
    fn page_of(all: Vec<T>, query: &ListQuery) -> Self {
        let total = i64::try_from(all.len()).unwrap_or(i64::MAX);
        let skip = usize::try_from(query.start_index - 1).unwrap_or(0);
        let take = usize::try_from(query.count).unwrap_or(0);
        Self {
            total,
            start_index: query.start_index,
            items: all.into_iter().skip(skip).take(take).collect(),
        }
    }
}

/// A user as SCIM shows it: the account and what the provider set on it.
#[derive(Debug, Clone)]
pub struct ScimUserView {
    pub user: User,
    pub scim: Option<ScimUserRecord>,
}

impl ScimUserView {
    /// The version (ETag): the account's last change and the SCIM change count.
    pub fn etag(&self) -> String {
        let version = self.scim.as_ref().map_or(0, |s| s.version);
        etag(&format!(
            "{}.{version}",
            karen_domain::clock::to_millis(self.user.updated_at)
        ))
    }

    /// When the user last changed.
    pub fn last_modified(&self) -> OffsetDateTime {
        self.scim.as_ref().map_or(self.user.updated_at, |s| {
            s.updated_at.max(self.user.updated_at)
        })
    }
}

/// A group with its members.
#[derive(Debug, Clone)]
pub struct ScimGroupView {
    pub group: ScimGroup,
    /// `None` when the caller asked to leave members out.
    pub members: Option<Vec<UserId>>,
}

impl ScimGroupView {
    /// The version (ETag).
    pub fn etag(&self) -> String {
        etag(&self.group.version.to_string())
    }
}

/// The SCIM service.
#[derive(Clone)]
pub struct ScimService {
    deps: Arc<Deps>,
}

impl ScimService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }
}

/// What the credential's owner holds: the most a SCIM request may grant or touch.
async fn ceiling(tx: &mut dyn TenantTx, ctx: &TenantContext) -> Result<PermissionSet> {
    ctx.require(Permission::ScimProvision)?;
    let owner = tx
        .users()
        .user_by_id(ctx.principal().user_id)
        .await?
        .ok_or_else(|| Error::internal("the credential's owner is missing"))?;
    crate::users::permissions_of_user(tx, &owner).await
}

/// Refuses `wanted` beyond `ceiling`.
fn within(ceiling: PermissionSet, wanted: PermissionSet, what: &str) -> Result<()> {
    let missing = wanted.missing_from(ceiling);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.as_str()).collect();
    Err(Error::Forbidden(format!(
        "{what} needs permissions the API key's owner does not hold: {}",
        names.join(", ")
    )))
}

/// Refuses to take the last active owner away.
async fn ensure_not_last_owner(tx: &mut dyn TenantTx, user: &User) -> Result<()> {
    let owner = RoleName::parse(BuiltinRole::Owner.name())?;
    if user.status == UserStatus::Active
        && user.roles.contains(&owner)
        && tx.users().count_active_with_role(&owner).await? <= 1
    {
        return Err(Error::Conflict(
            "this is the organisation's last active owner; make someone else owner first".into(),
        ));
    }
    Ok(())
}

fn uniqueness(message: String) -> Error {
    Error::scim(ScimErrorType::Uniqueness, message)
}

/// A store's uniqueness conflict as SCIM's `uniqueness` error (`taken`).
fn conflict_as_taken(error: Error, taken: impl FnOnce() -> Error) -> Error {
    match error {
        Error::Conflict(_) => taken(),
        other => other,
    }
}

/// Refuses a resource body whose `id` differs from the id in the path (PUT).
fn check_body_id(given: Option<&str>, path_id: &str) -> Result<()> {
    if given.is_some_and(|given| given != path_id) {
        return Err(Error::scim(
            ScimErrorType::Mutability,
            "id is read-only and differs from the id in the path",
        ));
    }
    Ok(())
}

impl ScimService {
    /// Ends a change: audits it, commits, and lets cached access decisions
    /// of the tenant go (roles or accounts may have changed).
    async fn commit_change(
        &self,
        mut tx: Box<dyn TenantTx>,
        ctx: &TenantContext,
        audit: Record,
    ) -> Result<()> {
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        self.deps.access_changed(ctx.tenant_id()).await;
        Ok(())
    }

    /// Makes the user's roles follow their groups: adds the role of each group
    /// named like a role, and removes roles that a group granted and no group
    /// grants any more. Audited as `scim.user.roles` when something changed.
    async fn sync_roles(
        &self,
        tx: &mut dyn TenantTx,
        ctx: &TenantContext,
        ceiling: PermissionSet,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<()> {
        let Some(mut user) = tx.users().user_by_id(user_id).await? else {
            return Ok(());
        };
        let custom = tx.roles().list_custom_roles().await?;
        let mut desired: Vec<RoleName> = Vec::new();
        for group in tx.scim().groups_of_user(user_id).await? {
            let key = group.role_key();
            let exists = BuiltinRole::from_name(&key).is_some()
                || custom.iter().any(|c| c.name.as_str() == key);
            if let (true, Ok(role)) = (exists, RoleName::parse(&key))
                && !desired.contains(&role)
            {
                desired.push(role);
            }
        }
        let grants = tx.scim().role_grants(user_id).await?;
        let mut roles = user.roles.clone();
        let added: Vec<RoleName> = desired
            .iter()
            .filter(|r| !roles.contains(r))
            .cloned()
            .collect();
        let removed: Vec<RoleName> = grants
            .iter()
            .filter(|r| !desired.contains(r))
            .cloned()
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        within(
            ceiling,
            permissions_of(&user.roles, &custom),
            "changing this user's roles",
        )?;
        within(
            ceiling,
            permissions_of(&added, &custom),
            "granting these roles",
        )?;
        if removed
            .iter()
            .any(|r| r.as_str() == BuiltinRole::Owner.name())
        {
            ensure_not_last_owner(tx, &user).await?;
        }
        roles.extend(added.iter().cloned());
        roles.retain(|r| !removed.contains(r));
        let before: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
        let before = serde_json::json!({ "roles": before });
        tx.users().set_roles(user_id, &roles).await?;
        user.roles = roles;
        user.updated_at = now;
        tx.users().update_user(&user).await?;
        for role in &added {
            tx.scim().add_role_grant(user_id, role, now).await?;
        }
        for role in &removed {
            tx.scim().remove_role_grant(user_id, role).await?;
        }
        let names = |list: &[RoleName]| {
            list.iter()
                .map(|r| r.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        let after = serde_json::json!({ "roles": names(&user.roles), "granted": names(&added),
            "revoked": names(&removed) });
        let audit = Record::new("scim.user.roles")
            .target("user", user_id)
            .before(&before)
            .after(&after);
        self.deps.audit(tx, ctx.scope().actor(), audit).await
    }
}
