//! Users and custom roles.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::permission::{BuiltinRole, PermissionSet};
use crate::values::{DisplayName, Email, Label, RoleName};
use crate::{Error, TenantId, UserId};

/// Whether a user may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// May sign in and use API keys.
    Active,
    /// Refused everywhere; all sessions ended.
    Disabled,
}

impl UserStatus {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "active" => Ok(UserStatus::Active),
            "disabled" => Ok(UserStatus::Disabled),
            other => Err(Error::internal(format!(
                "unknown user status '{other}' in store"
            ))),
        }
    }
}

/// A password as typed by a person; never logged, zeroized on drop.
pub struct Password(SecretString);

impl Password {
    /// Shortest password accepted.
    pub const MIN_CHARS: usize = 12;
    /// Longest password accepted (hashing cost must stay bounded).
    pub const MAX_CHARS: usize = 256;

    /// Accepts a password that meets the length policy and is not one of the
    /// 3000 most common (breached) passwords. Words of the account's context
    /// are checked where the account is known ([`Password::check_context`]).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let count = text.chars().count();
        if count < Self::MIN_CHARS {
            return Err(Error::invalid(
                Some("password"),
                format!("password must be at least {} characters", Self::MIN_CHARS),
            ));
        }
        if count > Self::MAX_CHARS {
            return Err(Error::invalid(
                Some("password"),
                format!("password must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        crate::password_policy::refuse_common(text)?;
        Ok(Self(SecretString::from(text.to_owned())))
    }

    /// Refuses a new password that contains a word of its account's context.
    pub fn check_context(
        &self,
        context: &crate::password_policy::PasswordContext,
    ) -> Result<(), Error> {
        context.check(self.expose())
    }

    /// The current password, sent to confirm a change: verified as received,
    /// but never longer than any password Karen accepts.
    pub fn current(text: &str) -> Result<Self, Error> {
        if text.chars().count() > Self::MAX_CHARS {
            return Err(Error::invalid(
                Some("current_password"),
                format!("a password has at most {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Self::presented(text))
    }

    /// A password exactly as presented at login (no policy: old passwords stay usable).
    pub fn presented(text: &str) -> Self {
        Self(SecretString::from(text.to_owned()))
    }

    /// The secret text, for the hasher only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A password hash in PHC string format (`$argon2id$…`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string produced by the hasher or read from the store.
    pub fn new(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(***)")
    }
}

/// Failed-login bookkeeping of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoginFailures {
    /// Consecutive failures since the last success.
    pub count: i32,
    /// When the last failure happened.
    pub last_failed_at: Option<OffsetDateTime>,
    /// Until when the account is locked.
    pub locked_until: Option<OffsetDateTime>,
}

/// A user of one tenant.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub display_name: Option<DisplayName>,
    pub status: UserStatus,
    pub roles: Vec<RoleName>,
    pub password_hash: Option<PasswordHash>,
    pub login_failures: LoginFailures,
    /// Access tokens issued before this instant are refused ("log out everywhere").
    pub sessions_valid_after: OffsetDateTime,
    pub last_login_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A tenant-defined role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomRole {
    pub tenant_id: TenantId,
    pub name: RoleName,
    pub description: Option<Label>,
    pub permissions: PermissionSet,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Resolves role names to the union of their permissions. Names that are neither
/// built in nor among `custom` grant nothing.
pub fn permissions_of(roles: &[RoleName], custom: &[CustomRole]) -> PermissionSet {
    roles.iter().fold(PermissionSet::EMPTY, |acc, role| {
        let granted = BuiltinRole::from_name(role.as_str())
            .map(BuiltinRole::permissions)
            .or_else(|| {
                custom
                    .iter()
                    .find(|c| &c.name == role)
                    .map(|c| c.permissions)
            })
            .unwrap_or(PermissionSet::EMPTY);
        acc.union(granted)
    })
}
