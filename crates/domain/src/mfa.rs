//! Multi-factor authentication: a user's TOTP authenticator, their single-use
//! recovery codes, the pending second step of a login, and the tenant policy
//! that decides who must have a second factor.

use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::credentials::SecretHash;
use crate::permission::{Permission, PermissionSet};
use crate::{Error, MfaChallengeId, TenantId, UserId};

/// Who in a tenant must sign in with a second factor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaRequirement {
    /// Nobody (users may still enroll).
    #[default]
    Off,
    /// Users holding any administrative permission (users, roles, tenant or
    /// billing management).
    Admins,
    /// Every user.
    Everyone,
}

impl MfaRequirement {
    /// The setting's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            MfaRequirement::Off => "off",
            MfaRequirement::Admins => "admins",
            MfaRequirement::Everyone => "everyone",
        }
    }

    /// Parses `off`, `admins` or `everyone`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "off" => Ok(MfaRequirement::Off),
            "admins" => Ok(MfaRequirement::Admins),
            "everyone" => Ok(MfaRequirement::Everyone),
            other => Err(Error::invalid(
                Some("settings.mfa_required"),
                format!(
                    "'{}' is not a policy; use \"off\", \"admins\" or \"everyone\"",
                    crate::values::printable(other, 40)
                ),
            )),
        }
    }

    /// Whether a user holding `permissions` must sign in with a second factor.
    pub fn applies_to(self, permissions: PermissionSet) -> bool {
        match self {
            MfaRequirement::Off => false,
            MfaRequirement::Everyone => true,
            MfaRequirement::Admins => ADMIN_PERMISSIONS.iter().any(|p| permissions.contains(*p)),
        }
    }
}

/// Holding any of these makes a user an administrator for the `admins` policy.
const ADMIN_PERMISSIONS: [Permission; 4] = [
    Permission::UsersManage,
    Permission::RolesManage,
    Permission::TenantManage,
    Permission::BillingManage,
];

/// Whether an authenticator is waiting for its first code or in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpState {
    /// Enrollment started; the first correct code activates it.
    Pending,
    /// Required at every login.
    Active,
}

impl TotpState {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TotpState::Pending => "pending",
            TotpState::Active => "active",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "pending" => Ok(TotpState::Pending),
            "active" => Ok(TotpState::Active),
            other => Err(Error::internal(format!(
                "unknown TOTP state '{other}' in store"
            ))),
        }
    }
}

/// A user's TOTP authenticator. The secret (base32) is sealed in the store.
#[derive(Clone)]
pub struct TotpRecord {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The shared secret, base32 without padding (as authenticator apps take it).
    pub secret: SecretString,
    pub state: TotpState,
    /// The last time step whose code was accepted; codes of this step or an
    /// earlier one are refused (each code works once).
    pub last_used_step: Option<i64>,
    pub created_at: OffsetDateTime,
    pub activated_at: Option<OffsetDateTime>,
}

impl fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpRecord")
            .field("tenant_id", &self.tenant_id)
            .field("user_id", &self.user_id)
            .field("secret", &"***")
            .field("state", &self.state)
            .field("last_used_step", &self.last_used_step)
            .finish_non_exhaustive()
    }
}

/// What the second step of a login is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengePurpose {
    /// The user has an authenticator: prove it with a code.
    Verify,
    /// The tenant requires a second factor the user lacks: enroll one first.
    Enroll,
}

impl ChallengePurpose {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChallengePurpose::Verify => "verify",
            ChallengePurpose::Enroll => "enroll",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "verify" => Ok(ChallengePurpose::Verify),
            "enroll" => Ok(ChallengePurpose::Enroll),
            other => Err(Error::internal(format!(
                "unknown MFA challenge purpose '{other}' in store"
            ))),
        }
    }
}

/// The pending second step of a login: a short-lived, single-use credential
/// that is good for nothing but finishing that login.
#[derive(Debug, Clone)]
pub struct MfaChallengeRecord {
    pub id: MfaChallengeId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub secret_hash: SecretHash,
    pub purpose: ChallengePurpose,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// A user's second factors, as shown to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfaStatus {
    /// `None`: no authenticator.
    pub totp: Option<TotpState>,
    /// Unused recovery codes.
    pub recovery_codes_left: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_and_scope() {
        for policy in [
            MfaRequirement::Off,
            MfaRequirement::Admins,
            MfaRequirement::Everyone,
        ] {
            assert_eq!(MfaRequirement::parse(policy.as_str()).unwrap(), policy);
        }
        assert!(MfaRequirement::parse("always").is_err());
        let member: PermissionSet = [Permission::ChatRead].into_iter().collect();
        let manager: PermissionSet = [Permission::UsersManage].into_iter().collect();
        assert!(!MfaRequirement::Admins.applies_to(member));
        assert!(MfaRequirement::Admins.applies_to(manager));
        assert!(MfaRequirement::Everyone.applies_to(member));
        assert!(!MfaRequirement::Off.applies_to(manager));
    }
}
