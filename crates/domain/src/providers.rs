//! Model providers and aliases a tenant configures on top of the platform's.

use std::fmt;

use secrecy::SecretString;
use time::OffsetDateTime;

use crate::chat::parse_model_name;
use crate::values::{RoleName, printable};
use crate::{Error, ProviderId, TenantId};

/// The APIs a tenant's provider may speak.
pub const PROVIDER_KINDS: &[&str] = &["openai", "anthropic"];

/// A tenant's model provider. The credential is write-only: it is stored
/// (through the same sealing as message content) and used, never shown.
#[derive(Clone)]
pub struct TenantProvider {
    pub id: ProviderId,
    pub tenant_id: TenantId,
    /// A short name (`a-z`, `0-9`, `_`, `-`), unique in the tenant.
    pub name: String,
    /// `openai` or `anthropic`.
    pub kind: String,
    pub base_url: String,
    pub api_key: Option<SecretString>,
    /// The model ids this provider serves for the tenant.
    pub models: Vec<String>,
    /// Tried before providers with a higher position (and before the platform's).
    pub position: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl fmt::Debug for TenantProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantProvider")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("models", &self.models)
            .finish()
    }
}

/// Checks a provider's name, kind, URL shape and models (the outbound policy
/// is checked by the router, which knows it).
pub fn validate_provider(
    name: &str,
    kind: &str,
    base_url: &str,
    models: &[String],
) -> Result<Vec<String>, Error> {
    RoleName::parse(name).map_err(|_| {
        Error::invalid(
            Some("name"),
            "name must be 2–64 characters of a-z, 0-9, '_' and '-', starting with a letter",
        )
    })?;
    if !PROVIDER_KINDS.contains(&kind) {
        return Err(Error::invalid(
            Some("kind"),
            format!("kind '{}' is not openai or anthropic", printable(kind, 30)),
        ));
    }
    if !(base_url.starts_with("https://") || base_url.starts_with("http://"))
        || base_url.len() > 2000
    {
        return Err(Error::invalid(
            Some("base_url"),
            "base_url must be an http:// or https:// URL",
        ));
    }
    if models.is_empty() || models.len() > 100 {
        return Err(Error::invalid(
            Some("models"),
            "list 1 to 100 model ids this provider serves",
        ));
    }
    models
        .iter()
        .map(|m| {
            parse_model_name(m).map_err(|e| match e {
                Error::Invalid { message, .. } => Error::invalid(Some("models"), message),
                other => other,
            })
        })
        .collect()
}

/// Another name for a model, in one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelAlias {
    pub tenant_id: TenantId,
    pub alias: String,
    pub target: String,
    pub created_at: OffsetDateTime,
}
