//! Named permissions, permission sets and the built-in roles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::values::printable;

macro_rules! permissions {
    ($( #[doc = $doc:literal] $variant:ident = $name:literal ),+ $(,)?) => {
        /// A named permission. Roles are sets of these; every route declares the one it needs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Permission {
            $( #[doc = $doc] $variant, )+
        }

        impl Permission {
            /// Every permission, in declaration order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant),+];

            /// The stable name, e.g. `users:manage`.
            pub const fn as_str(self) -> &'static str {
                match self { $(Permission::$variant => $name,)+ }
            }

            /// One line saying what the permission allows.
            pub const fn description(self) -> &'static str {
                match self { $(Permission::$variant => $doc.trim_ascii(),)+ }
            }
        }

        impl FromStr for Permission {
            type Err = Error;
            fn from_str(text: &str) -> Result<Self, Error> {
                match text {
                    $($name => Ok(Permission::$variant),)+
                    _ => Err(Error::invalid(
                        Some("permissions"),
                        format!("unknown permission '{}'; GET /v1/permissions lists them", printable(text, 40)),
                    )),
                }
            }
        }
    };
}

permissions! {
    /// Read one's own conversations and messages.
    ChatRead = "chat:read",
    /// Chat with assistants and manage one's own conversations.
    ChatWrite = "chat:write",
    /// Have the OpenAI-compatible API add one's memories and readable document passages to completions (and write memories back); an API key gets it only when its scopes name it.
    ChatRecall = "chat:recall",
    /// Compute embeddings through the OpenAI-compatible `POST /v1/embeddings` (metered like chat).
    EmbeddingsCreate = "embeddings:create",
    /// Read memories (one's own and the tenant's shared ones).
    MemoryRead = "memory:read",
    /// Create, change and delete memories.
    MemoryWrite = "memory:write",
    /// Read and search the tenant's documents one has access to.
    DocumentsRead = "documents:read",
    /// Upload, change and delete documents.
    DocumentsWrite = "documents:write",
    /// List and view the tenant's users and roles.
    UsersRead = "users:read",
    /// Create, change, disable users and assign roles (never beyond one's own permissions).
    UsersManage = "users:manage",
    /// Define, change and delete custom roles.
    RolesManage = "roles:manage",
    /// Create and revoke one's own API keys.
    ApiKeysCreate = "apikeys:create",
    /// List and revoke every API key of the tenant.
    ApiKeysManage = "apikeys:manage",
    /// Read the tenant's usage and spending.
    UsageRead = "usage:read",
    /// Read the tenant's audit trail.
    AuditRead = "audit:read",
    /// Read the tenant's profile and settings.
    TenantRead = "tenant:read",
    /// Change the tenant's name and settings.
    TenantManage = "tenant:manage",
    /// Manage plans, budgets and invoices.
    BillingManage = "billing:manage",
    /// Configure single sign-on, SCIM and MFA policy.
    SsoManage = "sso:manage",
    /// Provision users and groups through SCIM 2.0 (`/scim/v2`): the scope of an identity provider's API key; never carried by a key made without `scopes`.
    ScimProvision = "scim:provision",
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of permissions (a bit set: cheap to copy, intersect and compare).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PermissionSet(u64);

impl PermissionSet {
    /// No permission.
    pub const EMPTY: PermissionSet = PermissionSet(0);

    /// Every permission.
    pub fn all() -> Self {
        Self::from_iter(Permission::ALL.iter().copied())
    }

    const fn bit(permission: Permission) -> u64 {
        1u64 << (permission as u8)
    }

    /// Whether the set holds `permission`.
    pub const fn contains(self, permission: Permission) -> bool {
        self.0 & Self::bit(permission) != 0
    }

    /// Adds a permission.
    pub fn insert(&mut self, permission: Permission) {
        self.0 |= Self::bit(permission);
    }

    /// Both sets' permissions.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The set without `permission`.
    pub const fn without(self, permission: Permission) -> Self {
        Self(self.0 & !Self::bit(permission))
    }

    /// The permissions in both sets.
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether every permission of `self` is also in `other`.
    pub const fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    /// The permissions of `self` missing from `other`.
    pub fn missing_from(self, other: Self) -> Vec<Permission> {
        self.iter().filter(|p| !other.contains(*p)).collect()
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The permissions in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(move |p| self.contains(*p))
    }

    /// The names, in declaration order.
    pub fn names(self) -> Vec<String> {
        self.iter().map(|p| p.as_str().to_owned()).collect()
    }

    /// Parses a list of names; unknown names are an error that names them.
    pub fn parse_names<S: AsRef<str>>(names: &[S]) -> Result<Self, Error> {
        names
            .iter()
            .map(|n| n.as_ref().parse::<Permission>())
            .collect()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = Self::EMPTY;
        for permission in iter {
            set.insert(permission);
        }
        set
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Permission::as_str))
            .finish()
    }
}

impl Serialize for PermissionSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PermissionSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<Permission>::deserialize(deserializer)?;
        Ok(names.into_iter().collect())
    }
}

/// The roles every tenant has. Tenants add custom roles built from the same permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinRole {
    /// Everything, including billing; the tenant's first user.
    Owner,
    /// Everything but billing.
    Admin,
    /// Manages users and their roles (and uses the assistant like a member).
    UserManager,
    /// Reads usage, audit and the user list.
    Analyst,
    /// Uses the assistant: chat, memory, documents, own API keys.
    Member,
    /// Reads conversations, memories and documents.
    Viewer,
}

impl BuiltinRole {
    /// All built-in roles, most powerful first.
    pub const ALL: &'static [BuiltinRole] = &[
        BuiltinRole::Owner,
        BuiltinRole::Admin,
        BuiltinRole::UserManager,
        BuiltinRole::Analyst,
        BuiltinRole::Member,
        BuiltinRole::Viewer,
    ];

    /// The role's name.
    pub const fn name(self) -> &'static str {
        match self {
            BuiltinRole::Owner => "owner",
            BuiltinRole::Admin => "admin",
            BuiltinRole::UserManager => "user_manager",
            BuiltinRole::Analyst => "analyst",
            BuiltinRole::Member => "member",
            BuiltinRole::Viewer => "viewer",
        }
    }

    /// One line saying what the role is for.
    pub const fn description(self) -> &'static str {
        match self {
            BuiltinRole::Owner => "Everything, including billing; the organisation's first user.",
            BuiltinRole::Admin => "Everything except billing.",
            BuiltinRole::UserManager => {
                "A member who also manages users, assigning roles up to their own rights."
            }
            BuiltinRole::Analyst => "Reads usage, the audit trail and the user list.",
            BuiltinRole::Member => "Uses the assistant: chat, memory, documents and own API keys.",
            BuiltinRole::Viewer => "Reads conversations, memories and documents.",
        }
    }

    /// Looks a built-in role up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.name() == name)
    }

    /// The role's permissions.
    pub fn permissions(self) -> PermissionSet {
        use Permission::*;
        match self {
            BuiltinRole::Owner => PermissionSet::all(),
            BuiltinRole::Admin => PermissionSet::all()
                .iter()
                .filter(|p| *p != BillingManage)
                .collect(),
            // A user manager onboards members, so holds what it hands out.
            BuiltinRole::UserManager => BuiltinRole::Member
                .permissions()
                .union([UsersRead, UsersManage].into_iter().collect()),
            BuiltinRole::Analyst => [UsageRead, AuditRead, UsersRead, TenantRead]
                .into_iter()
                .collect(),
            BuiltinRole::Member => [
                ChatRead,
                ChatWrite,
                ChatRecall,
                EmbeddingsCreate,
                MemoryRead,
                MemoryWrite,
                DocumentsRead,
                ApiKeysCreate,
                TenantRead,
            ]
            .into_iter()
            .collect(),
            BuiltinRole::Viewer => [ChatRead, MemoryRead, DocumentsRead, TenantRead]
                .into_iter()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), *p);
            assert!(!p.description().is_empty());
        }
        assert!("users:fly".parse::<Permission>().is_err());
    }

    #[test]
    fn set_algebra() {
        let member = BuiltinRole::Member.permissions();
        let admin = BuiltinRole::Admin.permissions();
        assert!(member.is_subset_of(admin));
        assert!(!admin.is_subset_of(member));
        assert!(!admin.contains(Permission::BillingManage));
        assert!(
            BuiltinRole::Owner
                .permissions()
                .contains(Permission::BillingManage)
        );
        assert_eq!(
            admin.missing_from(member).len(),
            admin.iter().count() - member.iter().count()
        );
        let json = serde_json::to_string(&member).unwrap();
        assert_eq!(
            serde_json::from_str::<PermissionSet>(&json).unwrap(),
            member
        );
    }
}
