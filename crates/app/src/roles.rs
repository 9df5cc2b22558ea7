//! Roles: the built-in ones and the tenant's custom roles.

use std::sync::Arc;

use karen_domain::permission::{BuiltinRole, Permission, PermissionSet};
use karen_domain::user::CustomRole;
use karen_domain::values::{Label, RoleName};
use karen_domain::{Error, Result};

use crate::audit::Record;
use crate::{Authority, Deps};

/// A role as listed: built-in or custom.
#[derive(Debug, Clone)]
pub struct RoleView {
    pub name: String,
    pub description: Option<String>,
    pub builtin: bool,
    pub permissions: PermissionSet,
}

impl From<CustomRole> for RoleView {
    fn from(role: CustomRole) -> Self {
        Self {
            name: role.name.to_string(),
            description: role.description.map(|d| d.to_string()),
            builtin: false,
            permissions: role.permissions,
        }
    }
}

fn builtin_view(role: BuiltinRole) -> RoleView {
    RoleView {
        name: role.name().into(),
        description: Some(role.description().into()),
        builtin: true,
        permissions: role.permissions(),
    }
}

/// A custom role to create or change.
pub struct RoleInput {
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
}

/// The role service.
#[derive(Clone)]
pub struct RoleService {
    deps: Arc<Deps>,
}

fn parse_custom_name(name: &str) -> Result<RoleName> {
    let name = RoleName::parse(name.trim())?;
    if BuiltinRole::from_name(name.as_str()).is_some() {
        return Err(Error::Forbidden(format!(
            "'{name}' is a built-in role and cannot be changed"
        )));
    }
    Ok(name)
}

impl RoleService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Built-in roles, then custom ones.
    pub async fn list(&self, authority: Authority<'_>) -> Result<Vec<RoleView>> {
        authority.require(Permission::UsersRead)?;
        let mut tx = self.deps.store.tenant_read(authority.scope()).await?;
        let custom = tx.roles().list_custom_roles().await?;
        tx.commit().await?;
        Ok(BuiltinRole::ALL
            .iter()
            .copied()
            .map(builtin_view)
            .chain(custom.into_iter().map(RoleView::from))
            .collect())
    }

    /// One role by name.
    pub async fn get(&self, authority: Authority<'_>, name: &str) -> Result<RoleView> {
        authority.require(Permission::UsersRead)?;
        if let Some(role) = BuiltinRole::from_name(name) {
            return Ok(builtin_view(role));
        }
        let name = RoleName::parse(name).map_err(|_| Error::NotFound("role"))?;
        let mut tx = self.deps.store.tenant_read(authority.scope()).await?;
        let role = tx
            .roles()
            .custom_role(&name)
            .await?
            .ok_or(Error::NotFound("role"))?;
        tx.commit().await?;
        Ok(role.into())
    }

    /// Creates a custom role (never with permissions beyond the creator's).
    pub async fn create(
        &self,
        authority: Authority<'_>,
        name: &str,
        input: RoleInput,
    ) -> Result<RoleView> {
        authority.require(Permission::RolesManage)?;
        let name = parse_custom_name(name)?;
        let permissions = PermissionSet::parse_names(&input.permissions.unwrap_or_default())?;
        authority.ensure_within(permissions, "a role with these permissions")?;
        let now = self.deps.clock.now();
        let role = CustomRole {
            tenant_id: authority.tenant_id(),
            name,
            description: input.description.as_deref().map(Label::parse).transpose()?,
            permissions,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        tx.roles().insert_custom_role(&role).await?;
        let audit = Record::new("role.create")
            .target("role", &role.name)
            .after(&role_json(&role));
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        Ok(role.into())
    }

    /// Changes a custom role's description or permissions.
    pub async fn update(
        &self,
        authority: Authority<'_>,
        name: &str,
        input: RoleInput,
    ) -> Result<RoleView> {
        authority.require(Permission::RolesManage)?;
        let name = parse_custom_name(name)?;
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        let mut role = tx
            .roles()
            .custom_role(&name)
            .await?
            .ok_or(Error::NotFound("role"))?;
        authority.ensure_within(role.permissions, "changing this role")?;
        let before = role_json(&role);
        if let Some(names) = input.permissions {
            role.permissions = PermissionSet::parse_names(&names)?;
            authority.ensure_within(role.permissions, "a role with these permissions")?;
        }
        if let Some(description) = input.description {
            role.description = Some(Label::parse(&description)?);
        }
        role.updated_at = self.deps.clock.now();
        tx.roles().update_custom_role(&role).await?;
        let audit = Record::new("role.update")
            .target("role", &role.name)
            .before(&before)
            .after(&role_json(&role));
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        self.deps.access_changed(authority.tenant_id()).await;
        Ok(role.into())
    }

    /// Deletes a custom role that nobody holds.
    pub async fn delete(&self, authority: Authority<'_>, name: &str) -> Result<()> {
        authority.require(Permission::RolesManage)?;
        let name = parse_custom_name(name)?;
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        let role = tx
            .roles()
            .custom_role(&name)
            .await?
            .ok_or(Error::NotFound("role"))?;
        authority.ensure_within(role.permissions, "deleting this role")?;
        let holders = tx.roles().role_assignment_count(&name).await?;
        if holders > 0 {
            return Err(Error::Conflict(format!(
                "{holders} user(s) hold the role '{name}'; reassign them first"
            )));
        }
        if tx.tenant().await?.settings.default_role == name {
            return Err(Error::Conflict(format!(
                "'{name}' is the default role for new users; change it first"
            )));
        }
        tx.roles().delete_custom_role(&name).await?;
        let audit = Record::new("role.delete")
            .target("role", &name)
            .before(&role_json(&role));
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        tx.commit().await?;
        self.deps.access_changed(authority.tenant_id()).await;
        Ok(())
    }
}

/// A custom role as recorded in audit diffs.
fn role_json(role: &CustomRole) -> serde_json::Value {
    let permissions: Vec<&str> = role.permissions.iter().map(|p| p.as_str()).collect();
    serde_json::json!({
        "name": role.name.as_str(),
        "description": role.description.as_ref().map(|d| d.as_str()),
        "permissions": permissions,
    })
}
