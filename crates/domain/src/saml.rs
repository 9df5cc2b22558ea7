//! SAML 2.0 single sign-on: the identity provider a tenant trusts, as stored
//! in its connection's `config`, and what the SAML port exchanges with the
//! service (the protocol itself lives in an adapter).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Error;
use crate::sso::SsoFailure;

/// How an AuthnRequest reaches the identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamlBinding {
    /// A browser redirect with the DEFLATEd request in the query string.
    Redirect,
    /// An auto-submitting HTML form.
    Post,
}

impl SamlBinding {
    /// The name in the API (`redirect`, `post`).
    pub const fn as_str(self) -> &'static str {
        match self {
            SamlBinding::Redirect => "redirect",
            SamlBinding::Post => "post",
        }
    }
}

/// The identity provider of a SAML connection (stored as its `config`).
/// Certificates are public: nothing here is secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlSettings {
    /// The IdP's entityID: the Issuer of its responses.
    pub idp_entity_id: String,
    /// SingleSignOnService for the HTTP-Redirect binding, if offered.
    pub sso_redirect_url: Option<String>,
    /// SingleSignOnService for the HTTP-POST binding, if offered.
    pub sso_post_url: Option<String>,
    /// The signing certificates (base64 DER), several during a rollover.
    pub signing_certificates: Vec<String>,
    /// The binding a login uses when the IdP offers both.
    pub binding: SamlBinding,
    /// The attribute holding the email address; `None`: the NameID when it is
    /// an email address, else an `email` or `mail` attribute.
    pub email_attribute: Option<String>,
    /// The attribute holding the display name, if any.
    pub name_attribute: Option<String>,
}

impl SamlSettings {
    /// The binding to use: the preferred one if the IdP offers it, else the other.
    pub fn binding_for(&self, asked: Option<SamlBinding>) -> SamlBinding {
        let wanted = asked.unwrap_or(self.binding);
        match wanted {
            SamlBinding::Redirect if self.sso_redirect_url.is_none() => SamlBinding::Post,
            SamlBinding::Post if self.sso_post_url.is_none() => SamlBinding::Redirect,
            other => other,
        }
    }

    /// Checks the attribute names (the IdP part is checked by the adapter).
    pub fn validate(&self) -> Result<(), Error> {
        for (field, value) in [
            ("email_attribute", &self.email_attribute),
            ("name_attribute", &self.name_attribute),
        ] {
            if let Some(name) = value
                && (name.trim().is_empty()
                    || name.len() > 256
                    || name.chars().any(char::is_control))
            {
                return Err(Error::invalid(
                    Some(field),
                    "an attribute name must be 1-256 printable characters",
                ));
            }
        }
        Ok(())
    }
}

/// This service provider as one tenant's connection presents itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlSp {
    /// Our entityID (the Audience), `<public URL>/v1/auth/sso/saml/<slug>/metadata`.
    pub entity_id: String,
    /// Our assertion consumer URL (Destination, Recipient).
    pub acs_url: String,
}

/// An AuthnRequest ready to send in the chosen binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SamlAuthnRequest {
    /// The URL to redirect the browser to.
    Redirect(String),
    /// The form to post: `action`, `SAMLRequest`, `RelayState`.
    Post {
        action: String,
        saml_request: String,
        relay_state: String,
    },
}

/// What a verified SAML assertion says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlAssertion {
    /// The replay-cache key.
    pub assertion_id: String,
    /// The subject's NameID, whole.
    pub name_id: String,
    /// Whether the NameID's format is the email address one.
    pub name_id_is_email: bool,
    /// Attribute name → text values.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// The assertion is unusable from this instant.
    pub not_on_or_after: OffsetDateTime,
}

/// Why SAML input was refused: the reason for the audit trail and the
/// client, and the protocol core's own stable code (`saml_…`) for logs and
/// configuration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct SamlRefusal {
    pub failure: SsoFailure,
    pub code: &'static str,
    pub message: String,
}
