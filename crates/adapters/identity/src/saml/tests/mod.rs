//! Tests of the SAML core. Fixtures are signed at test time with keys made
//! here (nothing private is committed); `xmlsec.rs` checks the verifier
//! against a response signed by the independent `xmlsec1` tool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod c14n_vectors;
mod protocol;
mod tamper;
mod wrapping;
mod xmlsec;

use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::signing::{SignatureSettings, sign_enveloped_with};
use super::{Expectations, IdpConfig, SamlError, VerifiedAssertion, validate_response};

pub(super) const IDP_ENTITY: &str = "https://idp.example.test/metadata";
pub(super) const SP_ENTITY: &str = "https://karen.example.test/saml/acme";
pub(super) const ACS_URL: &str = "https://karen.example.test/saml/acme/acs";
pub(super) const REQUEST_ID: &str = "_req0123456789abcdef";
pub(super) const NOW: OffsetDateTime = datetime!(2026-12-02 21:00:00 UTC);

pub(super) const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub(super) const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
pub(super) const DIGEST_SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

/// A signing key and its self-signed certificate.
pub(super) struct TestKey {
    pub(super) certificate_der: Vec<u8>,
    pub(super) certificate_pem: String,
    private: Private,
}

enum Private {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
}

impl TestKey {
    fn generate(algorithm: &'static rcgen::SignatureAlgorithm) -> Self {
        let key_pair = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let params = rcgen::CertificateParams::new(vec!["idp.example.test".to_owned()]).unwrap();
        let certificate = params.self_signed(&key_pair).unwrap();
        let pkcs8 = key_pair.serialize_der();
        let private = if algorithm == &rcgen::PKCS_RSA_SHA256 {
            Private::Rsa(RsaKeyPair::from_pkcs8(&pkcs8).unwrap())
        } else {
            Private::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                    .unwrap(),
            )
        };
        Self {
            certificate_der: certificate.der().to_vec(),
            certificate_pem: certificate.pem(),
            private,
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.private {
            Private::Rsa(key) => {
                let mut out = vec![0; key.public_modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .unwrap();
                out
            }
            Private::Ecdsa(key) => key.sign(&rng, message).unwrap().as_ref().to_vec(),
        }
    }
}

/// The IdP's key, an attacker's key, and an ECDSA IdP key.
pub(super) static IDP_KEY: LazyLock<TestKey> =
    LazyLock::new(|| TestKey::generate(&rcgen::PKCS_RSA_SHA256));
pub(super) static ATTACKER_KEY: LazyLock<TestKey> =
    LazyLock::new(|| TestKey::generate(&rcgen::PKCS_RSA_SHA256));
pub(super) static ECDSA_KEY: LazyLock<TestKey> =
    LazyLock::new(|| TestKey::generate(&rcgen::PKCS_ECDSA_P256_SHA256));

pub(super) fn idp_config() -> IdpConfig {
    IdpConfig {
        entity_id: IDP_ENTITY.to_owned(),
        sso_redirect_url: Some("https://idp.example.test/sso/redirect".to_owned()),
        sso_post_url: Some("https://idp.example.test/sso/post".to_owned()),
        signing_certificates: vec![
            IDP_KEY.certificate_der.clone(),
            ECDSA_KEY.certificate_der.clone(),
        ],
    }
}

pub(super) fn expectations() -> Expectations {
    Expectations {
        sp_entity_id: SP_ENTITY.to_owned(),
        acs_url: ACS_URL.to_owned(),
        in_response_to: Some(REQUEST_ID.to_owned()),
        now: NOW,
        clock_skew: Duration::seconds(60),
    }
}

/// The parts of a response a test may change before signing.
#[derive(Clone)]
pub(super) struct ResponseParts {
    pub(super) response_id: String,
    pub(super) assertion_id: String,
    pub(super) destination: String,
    pub(super) recipient: String,
    pub(super) in_response_to: String,
    pub(super) issuer: String,
    pub(super) audience: String,
    /// Raw XML content of the NameID (may hold a comment).
    pub(super) name_id: String,
    pub(super) not_before: OffsetDateTime,
    pub(super) not_on_or_after: OffsetDateTime,
    pub(super) status: String,
}

impl Default for ResponseParts {
    fn default() -> Self {
        Self {
            response_id: "_resp1".to_owned(),
            assertion_id: "_assert1".to_owned(),
            destination: ACS_URL.to_owned(),
            recipient: ACS_URL.to_owned(),
            in_response_to: REQUEST_ID.to_owned(),
            issuer: IDP_ENTITY.to_owned(),
            audience: SP_ENTITY.to_owned(),
            name_id: "alice@acme.example.test".to_owned(),
            not_before: NOW - Duration::minutes(5),
            not_on_or_after: NOW + Duration::minutes(5),
            status: "urn:oasis:names:tc:SAML:2.0:status:Success".to_owned(),
        }
    }
}

fn instant(value: OffsetDateTime) -> String {
    super::request::format_instant(value).unwrap()
}

impl ResponseParts {
    /// The Assertion element alone.
    pub(super) fn assertion(&self) -> String {
        format!(
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{issued}">
    <saml:Issuer>{issuer}</saml:Issuer>
    <saml:Subject>
      <saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{name_id}</saml:NameID>
      <saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">
        <saml:SubjectConfirmationData InResponseTo="{irt}" NotOnOrAfter="{until}" Recipient="{recipient}"/>
      </saml:SubjectConfirmation>
    </saml:Subject>
    <saml:Conditions NotBefore="{not_before}" NotOnOrAfter="{until}">
      <saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction>
    </saml:Conditions>
    <saml:AuthnStatement AuthnInstant="{issued}" SessionIndex="_session7">
      <saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext>
    </saml:AuthnStatement>
    <saml:AttributeStatement>
      <saml:Attribute Name="email"><saml:AttributeValue xsi:type="xs:string">alice@acme.example.test</saml:AttributeValue></saml:Attribute>
      <saml:Attribute Name="groups"><saml:AttributeValue>staff</saml:AttributeValue><saml:AttributeValue>R&amp;D &lt;lab&gt;</saml:AttributeValue></saml:Attribute>
    </saml:AttributeStatement>
  </saml:Assertion>"#,
            id = self.assertion_id,
            issued = instant(NOW - Duration::minutes(1)),
            issuer = self.issuer,
            name_id = self.name_id,
            irt = self.in_response_to,
            until = instant(self.not_on_or_after),
            recipient = self.recipient,
            not_before = instant(self.not_before),
            audience = self.audience,
        )
    }

    /// A whole Response around [`Self::assertion`], unsigned.
    pub(super) fn response(&self) -> String {
        self.response_with(&self.assertion())
    }

    /// A Response around any content in the assertion's place.
    pub(super) fn response_with(&self, assertion: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="{id}" Version="2.0" IssueInstant="{issued}" Destination="{destination}" InResponseTo="{irt}">
  <saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">{issuer}</saml:Issuer>
  <samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status>
  {assertion}
</samlp:Response>
"#,
            id = self.response_id,
            issued = instant(NOW - Duration::minutes(1)),
            destination = self.destination,
            irt = self.in_response_to,
            issuer = self.issuer,
            status = self.status,
        )
    }
}

/// How [`sign`] signs: the defaults are what real IdPs do.
#[derive(Clone)]
pub(super) struct SignOptions<'k> {
    pub(super) key: &'k TestKey,
    pub(super) signature_method: &'static str,
    pub(super) digest_method: &'static str,
    /// The Reference URI; `None`: `#` and the signed element's ID.
    pub(super) reference_uri: Option<String>,
    /// A certificate to put in `ds:KeyInfo`.
    pub(super) key_info_certificate: Option<Vec<u8>>,
}

impl SignOptions<'static> {
    pub(super) fn idp() -> Self {
        Self::with_key(&IDP_KEY)
    }

    pub(super) fn with_key(key: &'static TestKey) -> Self {
        Self {
            key,
            signature_method: RSA_SHA256,
            digest_method: DIGEST_SHA256,
            reference_uri: None,
            key_info_certificate: None,
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Signs the element with `ID="{id}"` in `xml` with an enveloped signature
/// placed right after its Issuer (where the schema puts it).
pub(super) fn sign(xml: &str, id: &str, options: &SignOptions<'_>) -> String {
    let settings = SignatureSettings {
        signature_method: options.signature_method,
        digest_method: options.digest_method,
        reference_uri: options.reference_uri.as_deref(),
        key_info_certificate: options.key_info_certificate.as_deref(),
    };
    sign_enveloped_with(xml, id, &settings, |message| options.key.sign(message)).unwrap()
}

/// A response whose assertion is signed by the IdP: the usual shape.
pub(super) fn signed_response(parts: &ResponseParts) -> String {
    sign(&parts.response(), &parts.assertion_id, &SignOptions::idp())
}

pub(super) fn encode(xml: &str) -> String {
    b64(xml.as_bytes())
}

/// Validates `xml` as the ACS would receive it, with the default expectations.
pub(super) fn check(xml: &str) -> Result<VerifiedAssertion, SamlError> {
    validate_response(&encode(xml), &idp_config(), &expectations())
}

/// Validates with changed expectations.
pub(super) fn check_with(
    xml: &str,
    change: impl FnOnce(&mut Expectations),
) -> Result<VerifiedAssertion, SamlError> {
    let mut expect = expectations();
    change(&mut expect);
    validate_response(&encode(xml), &idp_config(), &expect)
}
