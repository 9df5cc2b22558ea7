//! [`SamlCore`]: this module's protocol core behind the domain's
//! [`SamlServiceProvider`] port.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use karen_domain::ports::SamlServiceProvider;
use karen_domain::saml::{
    SamlAssertion, SamlAuthnRequest, SamlBinding, SamlRefusal, SamlSettings, SamlSp,
};
use karen_domain::sso::SsoFailure;
use karen_domain::{Error, Result};
use time::OffsetDateTime;

use super::{
    Expectations, IdpConfig, NAMEID_FORMAT_EMAIL, SamlError, SpConfig, SsoBinding, authn_request,
    parse_idp_metadata, sp_metadata, validate_response,
};

/// The SAML 2.0 service provider (stateless; the store keeps the replay cache).
#[derive(Debug, Clone, Copy, Default)]
pub struct SamlCore;

/// Which login failure a refusal of the core is.
fn failure_of(error: &SamlError) -> SsoFailure {
    match error {
        SamlError::Unsigned => SsoFailure::Unsigned,
        SamlError::SignatureReference | SamlError::DigestMismatch | SamlError::BadSignature => {
            SsoFailure::Signature
        }
        SamlError::WeakOrUnknownAlgorithm(_) => SsoFailure::Algorithm,
        SamlError::Issuer => SsoFailure::Issuer,
        SamlError::Audience => SsoFailure::Audience,
        SamlError::NotYetValid | SamlError::Expired => SsoFailure::Expired,
        SamlError::Destination | SamlError::Recipient => SsoFailure::Destination,
        SamlError::InResponseTo => SsoFailure::InResponseTo,
        SamlError::Status(_) => SsoFailure::ProviderError,
        SamlError::NoBearerConfirmation => SsoFailure::Claims,
        _ => SsoFailure::Malformed,
    }
}

fn refusal(error: SamlError) -> SamlRefusal {
    SamlRefusal {
        failure: failure_of(&error),
        code: error.code(),
        message: error.to_string(),
    }
}

fn settings_of(idp: IdpConfig) -> SamlSettings {
    SamlSettings {
        binding: if idp.sso_redirect_url.is_some() {
            SamlBinding::Redirect
        } else {
            SamlBinding::Post
        },
        idp_entity_id: idp.entity_id,
        sso_redirect_url: idp.sso_redirect_url,
        sso_post_url: idp.sso_post_url,
        signing_certificates: idp
            .signing_certificates
            .iter()
            .map(|der| STANDARD.encode(der))
            .collect(),
        email_attribute: None,
        name_attribute: None,
    }
}

/// The stored settings as the core's IdP (stored certificates were checked
/// when configured; a broken one is a fault of the store).
fn idp_of(settings: &SamlSettings) -> Result<IdpConfig> {
    let signing_certificates = settings
        .signing_certificates
        .iter()
        .map(|text| STANDARD.decode(text))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::internal("stored SAML certificate is not base64"))?;
    Ok(IdpConfig {
        entity_id: settings.idp_entity_id.clone(),
        sso_redirect_url: settings.sso_redirect_url.clone(),
        sso_post_url: settings.sso_post_url.clone(),
        signing_certificates,
    })
}

fn sp_of(sp: &SamlSp) -> Result<SpConfig> {
    SpConfig::new(&sp.entity_id, &sp.acs_url)
        .map_err(|e| Error::internal(format!("service provider settings: {e}")))
}

impl SamlServiceProvider for SamlCore {
    fn settings_from_metadata(&self, xml: &str) -> Result<SamlSettings, SamlRefusal> {
        parse_idp_metadata(xml).map(settings_of).map_err(refusal)
    }

    fn settings_from_certificate(
        &self,
        entity_id: &str,
        sso_url: &str,
        binding: SamlBinding,
        certificates_pem: &str,
    ) -> Result<SamlSettings, SamlRefusal> {
        let binding = match binding {
            SamlBinding::Redirect => SsoBinding::HttpRedirect,
            SamlBinding::Post => SsoBinding::HttpPost,
        };
        IdpConfig::from_pem(entity_id, sso_url, binding, certificates_pem)
            .map(settings_of)
            .map_err(refusal)
    }

    fn sp_metadata(&self, sp: &SamlSp) -> Result<String> {
        Ok(sp_metadata(&sp_of(sp)?))
    }

    fn authn_request(
        &self,
        sp: &SamlSp,
        idp: &SamlSettings,
        binding: SamlBinding,
        request_id: &str,
        relay_state: &str,
        now: OffsetDateTime,
    ) -> Result<SamlAuthnRequest> {
        let mut idp = idp_of(idp)?;
        // The request's Destination is the location of the binding used.
        match binding {
            SamlBinding::Redirect => idp.sso_post_url = None,
            SamlBinding::Post => idp.sso_redirect_url = None,
        }
        let request = authn_request(&sp_of(sp)?, &idp, request_id, Some(relay_state), now)
            .map_err(|e| Error::internal(format!("SAML request: {e}")))?;
        match (binding, request.redirect_url, request.post) {
            (SamlBinding::Redirect, Some(url), _) => Ok(SamlAuthnRequest::Redirect(url)),
            (SamlBinding::Post, _, Some(post)) => Ok(SamlAuthnRequest::Post {
                action: post.action,
                saml_request: post.saml_request,
                relay_state: relay_state.to_owned(),
            }),
            _ => Err(Error::internal(
                "the IdP offers no location for the binding",
            )),
        }
    }

    fn verify_response(
        &self,
        saml_response: &str,
        sp: &SamlSp,
        idp: &SamlSettings,
        in_response_to: &str,
        now: OffsetDateTime,
    ) -> Result<SamlAssertion, SamlRefusal> {
        let internal = |e: Error| SamlRefusal {
            failure: SsoFailure::Malformed,
            code: "saml_configuration",
            message: e.to_string(),
        };
        let idp = idp_of(idp).map_err(internal)?;
        let sp = sp_of(sp).map_err(internal)?;
        let expect = Expectations::new(&sp, Some(in_response_to), now);
        let verified = validate_response(saml_response, &idp, &expect).map_err(refusal)?;
        Ok(SamlAssertion {
            assertion_id: verified.assertion_id,
            name_id_is_email: verified.name_id_format == NAMEID_FORMAT_EMAIL,
            name_id: verified.name_id,
            attributes: verified.attributes,
            // Kept in the replay cache until the skew has passed too.
            not_on_or_after: verified
                .not_on_or_after
                .checked_add(expect.clock_skew)
                .unwrap_or(verified.not_on_or_after),
        })
    }
}
