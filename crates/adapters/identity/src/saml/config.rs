//! The two parties' settings: the identity provider we trust and ourselves.

use base64::Engine as _;

use super::dsig::public_key;
use super::error::SamlError;

/// `urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect`.
pub const BINDING_HTTP_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
/// `urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST`.
pub const BINDING_HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
/// The e-mail address NameID format, what this service provider asks for by default.
pub const NAMEID_FORMAT_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
/// The NameID format an identity provider uses when it says none.
pub const NAMEID_FORMAT_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";

/// How an AuthnRequest reaches the identity provider's single sign-on service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoBinding {
    /// A browser redirect carrying the DEFLATEd request in the query string.
    HttpRedirect,
    /// An auto-submitted HTML form carrying the base64 request.
    HttpPost,
}

/// An identity provider this service provider trusts (one per tenant connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpConfig {
    /// The IdP's entityID: the Issuer its responses and assertions must carry.
    pub entity_id: String,
    /// SingleSignOnService location for the HTTP-Redirect binding, if offered.
    pub sso_redirect_url: Option<String>,
    /// SingleSignOnService location for the HTTP-POST binding, if offered.
    pub sso_post_url: Option<String>,
    /// DER X.509 certificates whose keys may sign (several during a rollover).
    pub signing_certificates: Vec<Vec<u8>>,
}

impl IdpConfig {
    /// Builds a configuration from an SSO URL and one or more PEM certificates
    /// (what an administrator pastes when the IdP offers no metadata).
    pub fn from_pem(
        entity_id: &str,
        sso_url: &str,
        binding: SsoBinding,
        certificates_pem: &str,
    ) -> Result<Self, SamlError> {
        let (sso_redirect_url, sso_post_url) = match binding {
            SsoBinding::HttpRedirect => (Some(sso_url.to_owned()), None),
            SsoBinding::HttpPost => (None, Some(sso_url.to_owned())),
        };
        let config = Self {
            entity_id: entity_id.to_owned(),
            sso_redirect_url,
            sso_post_url,
            signing_certificates: certificates_from_pem(certificates_pem)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the entity ID, the URLs and that every certificate holds an RSA
    /// or EC key.
    pub fn validate(&self) -> Result<(), SamlError> {
        if self.entity_id.trim().is_empty() {
            return Err(SamlError::Missing {
                what: "IdP entity ID",
            });
        }
        if self.sso_redirect_url.is_none() && self.sso_post_url.is_none() {
            return Err(SamlError::Missing {
                what: "IdP single sign-on URL",
            });
        }
        for url in [&self.sso_redirect_url, &self.sso_post_url]
            .into_iter()
            .flatten()
        {
            check_http_url(url, "IdP single sign-on URL")?;
        }
        if self.signing_certificates.is_empty() {
            return Err(SamlError::Missing {
                what: "IdP signing certificate",
            });
        }
        for der in &self.signing_certificates {
            public_key(der)?;
        }
        Ok(())
    }
}

/// This service provider, as one tenant's SAML connection presents itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpConfig {
    /// Our entityID: the Audience assertions must name.
    pub entity_id: String,
    /// Our AssertionConsumerService URL (HTTP-POST): Destination and Recipient.
    pub acs_url: String,
    /// The NameID format we ask for and advertise.
    pub name_id_format: String,
}

impl SpConfig {
    /// A service provider asking for e-mail address NameIDs.
    pub fn new(entity_id: &str, acs_url: &str) -> Result<Self, SamlError> {
        if entity_id.trim().is_empty() {
            return Err(SamlError::Missing {
                what: "SP entity ID",
            });
        }
        check_http_url(acs_url, "assertion consumer URL")?;
        Ok(Self {
            entity_id: entity_id.to_owned(),
            acs_url: acs_url.to_owned(),
            name_id_format: NAMEID_FORMAT_EMAIL.to_owned(),
        })
    }
}

pub(crate) fn check_http_url(text: &str, what: &'static str) -> Result<url::Url, SamlError> {
    let url = url::Url::parse(text).map_err(|_| SamlError::Invalid { what })?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(SamlError::Invalid { what });
    }
    Ok(url)
}

/// Every `CERTIFICATE` block of a PEM text, as DER.
pub fn certificates_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, SamlError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certificates = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let after_begin = &rest[start + BEGIN.len()..];
        let end = after_begin
            .find(END)
            .ok_or(SamlError::Certificate("unterminated PEM block"))?;
        let body: String = after_begin[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| SamlError::Certificate("PEM body is not base64"))?;
        public_key(&der)?;
        certificates.push(der);
        rest = &after_begin[end + END.len()..];
    }
    if certificates.is_empty() {
        return Err(SamlError::Certificate("no PEM CERTIFICATE block"));
    }
    Ok(certificates)
}
