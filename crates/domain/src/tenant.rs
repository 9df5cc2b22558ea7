//! Tenants (organisations).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::values::{PlanName, RoleName, Slug, TenantName};
use crate::{Error, TenantId};

/// Whether a tenant may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// In service.
    Active,
    /// Refused: its users and keys get `tenant_suspended`.
    Suspended,
    /// Being deleted; resumed by `karen tenant delete` if interrupted.
    Deleting,
}

impl TenantStatus {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleting => "deleting",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "active" => Ok(TenantStatus::Active),
            "suspended" => Ok(TenantStatus::Suspended),
            "deleting" => Ok(TenantStatus::Deleting),
            other => Err(Error::internal(format!(
                "unknown tenant status '{other}' in store"
            ))),
        }
    }
}

/// Tenant-wide settings a tenant admin may change. Later features add their own
/// fields (with defaults, so stored settings stay readable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// The role given to users created without explicit roles.
    pub default_role: RoleName,
    /// If not empty, users may only be created with emails in these domains.
    pub allowed_email_domains: Vec<String>,
    /// The embedding model of the tenant's memories and documents (one the
    /// platform offers); unset: the platform default. Changing it re-embeds
    /// everything into the new model's space.
    pub embedding_model: Option<String>,
    /// Whether chat turns write new memories back (extraction after each turn).
    pub memory_extraction: bool,
    /// Who must sign in with a second factor (TOTP).
    pub mfa_required: crate::mfa::MfaRequirement,
    /// Whether everyone but owners must sign in through single sign-on
    /// (password logins of other users are refused with `sso_required`).
    pub sso_required: bool,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            default_role: RoleName::from_trusted(crate::BuiltinRole::Member.name()),
            allowed_email_domains: Vec::new(),
            embedding_model: None,
            memory_extraction: true,
            mfa_required: crate::mfa::MfaRequirement::Off,
            sso_required: false,
        }
    }
}

impl TenantSettings {
    /// Checks the settings' own rules (the role's existence is checked by the service).
    pub fn validate(&self) -> Result<(), Error> {
        if self.allowed_email_domains.len() > 100 {
            return Err(Error::invalid(
                Some("settings.allowed_email_domains"),
                "at most 100 email domains may be listed",
            ));
        }
        for domain in &self.allowed_email_domains {
            let probe = format!("x@{domain}");
            if crate::Email::parse(&probe).is_err() || domain.to_lowercase() != *domain {
                return Err(Error::invalid(
                    Some("settings.allowed_email_domains"),
                    format!(
                        "'{}' is not a lowercase domain name like example.com",
                        crate::values::printable(domain, 80)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether `email` may belong to this tenant.
    pub fn allows_email(&self, email: &crate::Email) -> bool {
        self.allowed_email_domains.is_empty()
            || email
                .as_str()
                .rsplit_once('@')
                .is_some_and(|(_, domain)| self.allowed_email_domains.iter().any(|d| d == domain))
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: Slug,
    pub name: TenantName,
    pub plan: PlanName,
    pub status: TenantStatus,
    pub settings: TenantSettings,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Tenant {
    /// Refuses use of a tenant that is not active.
    pub fn ensure_usable(&self) -> Result<(), Error> {
        match self.status {
            TenantStatus::Active => Ok(()),
            TenantStatus::Suspended => Err(Error::TenantSuspended),
            TenantStatus::Deleting => Err(Error::NotFound("tenant")),
        }
    }
}
