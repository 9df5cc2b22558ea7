//! Users of a tenant: create, list, change, assign roles, disable and enable.
//! Nobody may grant, or act on someone holding, permissions they lack, and the
//! last active owner cannot be disabled or demoted.

use std::sync::Arc;

use karen_domain::credentials::PasswordTokenPurpose;
use karen_domain::page::{Page, PageRequest};
use karen_domain::permission::{BuiltinRole, Permission, PermissionSet};
use karen_domain::ports::TenantTx;
use karen_domain::user::{LoginFailures, Password, User, UserStatus, permissions_of};
use karen_domain::values::{DisplayName, Email, RoleName};
use karen_domain::{Error, Result, UserId};

use crate::audit::Record;
use crate::auth::{
    PasswordSetup, check_new_password, end_all_sessions, issue_password_token,
    verify_current_password,
};
use crate::{Authority, Deps};

/// A user to create.
pub struct NewUser {
    pub email: String,
    pub display_name: Option<String>,
    /// If absent, the account gets no usable password but a password setup
    /// token, returned once.
    pub password: Option<Password>,
    /// If absent, the tenant's default role.
    pub roles: Option<Vec<String>>,
}

/// Changes to a user's profile.
#[derive(Default)]
pub struct UserChanges {
    pub email: Option<String>,
    /// `Some(None)` clears the display name.
    pub display_name: Option<Option<String>>,
    /// Needed to change one's own email (the address one signs in with).
    pub current_password: Option<Password>,
}

/// The user service.
#[derive(Clone)]
pub struct UserService {
    deps: Arc<Deps>,
}

/// Parses role names and checks each exists (built in, or a custom role of the tenant).
pub(crate) async fn resolve_roles(
    tx: &mut dyn TenantTx,
    names: &[String],
) -> Result<(Vec<RoleName>, PermissionSet)> {
    if names.len() > 32 {
        return Err(Error::invalid(
            Some("roles"),
            "at most 32 roles may be assigned",
        ));
    }
    let mut roles: Vec<RoleName> = Vec::new();
    for name in names {
        let role = RoleName::parse(name.trim())?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    let custom = tx.roles().list_custom_roles().await?;
    for role in &roles {
        if BuiltinRole::from_name(role.as_str()).is_none()
            && !custom.iter().any(|c| &c.name == role)
        {
            return Err(Error::invalid(
                Some("roles"),
                format!(
                    "there is no role named '{}'",
                    karen_domain::values::printable(role.as_ref(), 64)
                ),
            ));
        }
    }
    let permissions = permissions_of(&roles, &custom);
    Ok((roles, permissions))
}

/// The user `id` of the transaction's tenant, or `not_found`.
async fn existing(tx: &mut dyn TenantTx, id: UserId) -> Result<User> {
    tx.users()
        .user_by_id(id)
        .await?
        .ok_or(Error::NotFound("user"))
}

/// The permissions a user holds through their roles.
pub(crate) async fn permissions_of_user(
    tx: &mut dyn TenantTx,
    user: &User,
) -> Result<PermissionSet> {
    let custom = tx.roles().list_custom_roles().await?;
    Ok(permissions_of(&user.roles, &custom))
}

fn owner_role() -> Result<RoleName> {
    RoleName::parse(BuiltinRole::Owner.name())
}

/// Refuses a change that would leave the organisation without an active owner.
pub(crate) async fn ensure_not_last_owner(tx: &mut dyn TenantTx, user: &User) -> Result<()> {
    let owner = owner_role()?;
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

impl UserService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// One page of users.
    pub async fn list(&self, authority: Authority<'_>, page: &PageRequest) -> Result<Page<User>> {
        authority.require(Permission::UsersRead)?;
        let mut tx = self.deps.store.tenant_read(authority.scope()).await?;
        let rows = tx.users().list_users(page).await?;
        tx.commit().await?;
        Ok(Page::from_rows(rows, page, |u| u.id.as_uuid()))
    }

    /// One user (a member may always read their own record).
    pub async fn get(&self, authority: Authority<'_>, id: UserId) -> Result<User> {
        if authority.user_id() != Some(id) {
            authority.require(Permission::UsersRead)?;
        }
        let mut tx = self.deps.store.tenant_read(authority.scope()).await?;
        let user = existing(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// One user by id or email (for the CLI).
    pub async fn find(&self, authority: Authority<'_>, id_or_email: &str) -> Result<User> {
        authority.require(Permission::UsersRead)?;
        let mut tx = self.deps.store.tenant_read(authority.scope()).await?;
        let user = match UserId::parse(id_or_email) {
            Ok(id) => tx.users().user_by_id(id).await?,
            Err(_) => {
                tx.users()
                    .user_by_email(&Email::parse(id_or_email)?)
                    .await?
            }
        };
        tx.commit().await?;
        user.ok_or(Error::NotFound("user"))
    }

    /// Creates a user; without a password, returns the account's password
    /// setup token (the account has no usable password until it is used).
    pub async fn create(
        &self,
        authority: Authority<'_>,
        request: NewUser,
    ) -> Result<(User, Option<PasswordSetup>)> {
        authority.require(Permission::UsersManage)?;
        let email = Email::parse(&request.email)?;
        let display_name = request
            .display_name
            .as_deref()
            .map(DisplayName::parse)
            .transpose()?;
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        let tenant = tx.tenant().await?;
        if let Some(password) = &request.password {
            check_new_password(password, tenant.slug.as_str(), tenant.name.as_str(), &email)?;
        }
        if !tenant.settings.allows_email(&email) {
            return Err(Error::invalid(
                Some("email"),
                format!(
                    "this organisation only accepts emails in: {}",
                    tenant.settings.allowed_email_domains.join(", ")
                ),
            ));
        }
        let names = request
            .roles
            .unwrap_or_else(|| vec![tenant.settings.default_role.to_string()]);
        let (roles, granted) = resolve_roles(&mut *tx, &names).await?;
        authority.ensure_within(granted, "assigning these roles")?;
        let password_hash = match &request.password {
            Some(password) => Some(self.deps.hasher.hash(password).await?),
            None => None,
        };
        let now = self.deps.clock.now();
        let user = User {
            id: UserId::generate(),
            tenant_id: authority.tenant_id(),
            email,
            display_name,
            status: UserStatus::Active,
            roles,
            password_hash,
            login_failures: LoginFailures::default(),
            sessions_valid_after: now,
            last_login_at: None,
            created_at: now,
            updated_at: now,
        };
        tx.users().insert_user(&user).await?;
        let audit = Record::new("user.create")
            .target("user", user.id)
            .after(&user_json(&user));
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        let setup = match user.password_hash {
            Some(_) => None,
            None => Some(
                issue_password_token(
                    &self.deps,
                    &mut *tx,
                    user.id,
                    PasswordTokenPurpose::Setup,
                    authority.actor(),
                )
                .await?,
            ),
        };
        tx.commit().await?;
        Ok((user, setup))
    }

    /// Loads a user the authority may manage: it must exist in the tenant and
    /// hold no permission the authority lacks.
    async fn managed_user(
        &self,
        authority: Authority<'_>,
        tx: &mut dyn TenantTx,
        id: UserId,
    ) -> Result<User> {
        authority.require(Permission::UsersManage)?;
        let user = existing(&mut *tx, id).await?;
        let held = permissions_of_user(tx, &user).await?;
        authority.ensure_within(held, "managing this user")?;
        Ok(user)
    }

    /// Checks the current password of a user changing their own sign-in
    /// address, so a session left open (or a stolen token) cannot move the
    /// account to an address someone else controls.
    async fn reauthenticate(&self, user: &User, current: Option<&Password>) -> Result<()> {
        let Some(current) = current else {
            return Err(Error::invalid(
                Some("current_password"),
                "changing your own email needs your current password: send it as current_password",
            ));
        };
        verify_current_password(&self.deps, user, current).await
    }

    /// Changes email or display name.
    pub async fn update(
        &self,
        authority: Authority<'_>,
        id: UserId,
        changes: UserChanges,
    ) -> Result<User> {
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        let mut user = self.managed_user(authority, &mut *tx, id).await?;
        let before = user_json(&user);
        if let Some(email) = changes.email {
            let email = Email::parse(&email)?;
            if !tx.tenant().await?.settings.allows_email(&email) {
                return Err(Error::invalid(
                    Some("email"),
                    "this email domain is not accepted by the organisation",
                ));
            }
            if authority.user_id() == Some(id) && email != user.email {
                self.reauthenticate(&user, changes.current_password.as_ref())
                    .await?;
            }
            user.email = email;
        }
        if let Some(display_name) = changes.display_name {
            user.display_name = display_name
                .as_deref()
                .map(DisplayName::parse)
                .transpose()?;
        }
        user.updated_at = self.deps.clock.now();
        tx.users().update_user(&user).await?;
        let audit = Record::new("user.update")
            .target("user", id)
            .before(&before)
            .after(&user_json(&user));
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        self.deps.access_changed(authority.tenant_id()).await;
        Ok(user)
    }

    /// Replaces a user's roles.
    pub async fn set_roles(
        &self,
        authority: Authority<'_>,
        id: UserId,
        names: &[String],
    ) -> Result<User> {
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        let mut user = self.managed_user(authority, &mut *tx, id).await?;
        let (roles, granted) = resolve_roles(&mut *tx, names).await?;
        authority.ensure_within(granted, "assigning these roles")?;
        if !roles.contains(&owner_role()?) {
            ensure_not_last_owner(&mut *tx, &user).await?;
        }
        tx.users().set_roles(id, &roles).await?;
        let before = user_json(&user);
        user.roles = roles;
        user.updated_at = self.deps.clock.now();
        tx.users().update_user(&user).await?;
        let audit = Record::new("user.roles.set")
            .target("user", id)
            .before(&before)
            .after(&user_json(&user));
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        self.deps.access_changed(authority.tenant_id()).await;
        Ok(user)
    }

    /// Disables a user and ends all their sessions at once.
    pub async fn disable(&self, authority: Authority<'_>, id: UserId) -> Result<User> {
        if authority.user_id() == Some(id) {
            return Err(Error::Conflict(
                "you cannot disable your own account".into(),
            ));
        }
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        let mut user = self.managed_user(authority, &mut *tx, id).await?;
        ensure_not_last_owner(&mut *tx, &user).await?;
        let now = self.deps.clock.now();
        end_all_sessions(&mut *tx, id, now).await?;
        user = existing(&mut *tx, id).await?;
        user.status = UserStatus::Disabled;
        user.updated_at = now;
        tx.users().update_user(&user).await?;
        let audit = Record::new("user.disable").target("user", id);
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        self.deps.access_changed(authority.tenant_id()).await;
        tracing::info!(tenant_id = %authority.tenant_id(), user_id = %id, "user disabled; sessions ended");
        Ok(user)
    }

    /// Enables a disabled user.
    pub async fn enable(&self, authority: Authority<'_>, id: UserId) -> Result<User> {
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        let mut user = self.managed_user(authority, &mut *tx, id).await?;
        user.status = UserStatus::Active;
        user.updated_at = self.deps.clock.now();
        tx.users().update_user(&user).await?;
        let audit = Record::new("user.enable").target("user", id);
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        self.deps.access_changed(authority.tenant_id()).await;
        Ok(user)
    }

    /// Lifts a login lockout and clears the failure count.
    pub async fn unlock(&self, authority: Authority<'_>, id: UserId) -> Result<User> {
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        self.managed_user(authority, &mut *tx, id).await?;
        tx.users().reset_login_failures(id).await?;
        let user = existing(&mut *tx, id).await?;
        let audit = Record::new("user.unlock").target("user", id);
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %authority.tenant_id(), user_id = %id, "login lockout lifted");
        Ok(user)
    }

    /// Issues a password reset token for a user the authority may manage
    /// (shown once). The current password keeps working until the token is
    /// used; a new token supersedes the user's earlier ones.
    pub async fn reset_password(
        &self,
        authority: Authority<'_>,
        id: UserId,
    ) -> Result<PasswordSetup> {
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        let user = self.managed_user(authority, &mut *tx, id).await?;
        if user.status == UserStatus::Disabled {
            return Err(Error::Conflict(
                "the user is disabled; enable them before resetting their password".into(),
            ));
        }
        let setup = issue_password_token(
            &self.deps,
            &mut *tx,
            id,
            PasswordTokenPurpose::Reset,
            authority.actor(),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %authority.tenant_id(), user_id = %id, "password reset token issued");
        Ok(setup)
    }

    /// Removes a user's authenticator and recovery codes (a lost device), so
    /// that they sign in with the password alone, or enroll again where the
    /// tenant requires it.
    pub async fn reset_mfa(&self, authority: Authority<'_>, id: UserId) -> Result<()> {
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        self.managed_user(authority, &mut *tx, id).await?;
        let had_authenticator = tx.mfa().delete_mfa(id).await?;
        let audit = Record::new("user.mfa.reset")
            .target("user", id)
            .after(&serde_json::json!({ "had_authenticator": had_authenticator }));
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %authority.tenant_id(), user_id = %id, had_authenticator, "multi-factor authentication reset");
        Ok(())
    }

    /// A user's effective permissions (from their roles).
    pub async fn permissions(
        &self,
        authority: Authority<'_>,
        user: &User,
    ) -> Result<PermissionSet> {
        let mut tx = self.deps.store.tenant_read(authority.scope()).await?;
        let held = permissions_of_user(&mut *tx, user).await?;
        tx.commit().await?;
        Ok(held)
    }
}

/// A user as recorded in audit diffs (never the password hash).
pub(crate) fn user_json(user: &User) -> serde_json::Value {
    let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
    serde_json::json!({
        "email": user.email.as_str(),
        "display_name": user.display_name.as_ref().map(|d| d.as_str()),
        "status": user.status.as_str(),
        "roles": roles,
    })
}
