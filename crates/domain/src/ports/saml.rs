//! The SAML 2.0 service-provider protocol, implemented by an adapter: no I/O,
//! the tenant's IdP comes from its stored connection.

use time::OffsetDateTime;

use crate::Result;
use crate::saml::{
    SamlAssertion, SamlAuthnRequest, SamlBinding, SamlRefusal, SamlSettings, SamlSp,
};

/// Reads IdP configuration, writes SP metadata and AuthnRequests, and
/// verifies responses (signature by a configured certificate, Issuer,
/// Audience, Destination, Recipient, InResponseTo, validity window). Replay
/// protection is the caller's: it keeps every accepted assertion ID.
pub trait SamlServiceProvider: Send + Sync {
    /// The IdP part of the settings from metadata XML (`binding` and the
    /// attribute names are left at their defaults).
    fn settings_from_metadata(&self, xml: &str) -> Result<SamlSettings, SamlRefusal>;
    /// The IdP part from an entity ID, an SSO URL (of `binding`) and PEM certificates.
    fn settings_from_certificate(
        &self,
        entity_id: &str,
        sso_url: &str,
        binding: SamlBinding,
        certificates_pem: &str,
    ) -> Result<SamlSettings, SamlRefusal>;
    /// Our metadata XML for the IdP's administrator.
    fn sp_metadata(&self, sp: &SamlSp) -> Result<String>;
    /// An AuthnRequest with ID `request_id` in `binding`.
    fn authn_request(
        &self,
        sp: &SamlSp,
        idp: &SamlSettings,
        binding: SamlBinding,
        request_id: &str,
        relay_state: &str,
        now: OffsetDateTime,
    ) -> Result<SamlAuthnRequest>;
    /// Verifies a `SAMLResponse` (base64) answering `in_response_to`.
    fn verify_response(
        &self,
        saml_response: &str,
        sp: &SamlSp,
        idp: &SamlSettings,
        in_response_to: &str,
        now: OffsetDateTime,
    ) -> Result<SamlAssertion, SamlRefusal>;
}
