//! A test SAML 2.0 identity provider: it reads the AuthnRequest a browser
//! brings from Karen's `start` (HTTP-Redirect URL or HTTP-POST form) and
//! answers with a `samlp:Response` whose assertion it signs with its own
//! RSA key (exclusive C14N and RSA-SHA256, through the identity crate's
//! signer, so the bytes signed are the bytes the verifier digests). Tests
//! make it answer wrongly in every way the issue lists: unsigned, signed by
//! another key, wrapped, expired, for another audience or request, with a
//! comment inside the NameID, or reusing an assertion ID.
//!
//! Nothing is served over the network: Karen never calls the IdP (its
//! metadata is uploaded), only the browser does, and the test plays the
//! browser.

use std::io::Read as _;
use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use karen_identity::saml::signing::{RSA_SHA256, sign_enveloped};
use time::{Duration, OffsetDateTime};

/// The IdP's entity ID.
pub const SAML_IDP_ENTITY: &str = "https://idp.saml.test/metadata";
/// Its HTTP-Redirect single sign-on URL (never contacted).
pub const SAML_IDP_SSO_REDIRECT: &str = "https://idp.saml.test/sso/redirect";
/// Its HTTP-POST single sign-on URL (never contacted).
pub const SAML_IDP_SSO_POST: &str = "https://idp.saml.test/sso/post";

/// A signing key and its self-signed certificate.
pub struct SamlKey {
    key: RsaKeyPair,
    /// The certificate, PEM.
    pub certificate_pem: String,
    certificate_der: Vec<u8>,
}

impl SamlKey {
    fn generate() -> Self {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let params =
            rcgen::CertificateParams::new(vec!["idp.saml.test".to_owned()]).expect("params");
        let certificate = params.self_signed(&key_pair).expect("certificate");
        Self {
            key: RsaKeyPair::from_pkcs8(&key_pair.serialize_der()).expect("PKCS#8"),
            certificate_pem: certificate.pem(),
            certificate_der: certificate.der().to_vec(),
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut out = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut out)
            .expect("RSA signature");
        out
    }
}

/// The IdP's key (2048-bit RSA generation is slow: made once per test binary).
pub static SAML_IDP_KEY: LazyLock<SamlKey> = LazyLock::new(SamlKey::generate);
/// A key the IdP does not publish: an attacker's.
pub static SAML_ROGUE_KEY: LazyLock<SamlKey> = LazyLock::new(SamlKey::generate);

/// The IdP's metadata with both bindings.
pub fn saml_idp_metadata() -> String {
    format!(
        concat!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity}">"#,
            r#"<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">"#,
            r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#,
            r#"<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{redirect}"/>"#,
            r#"<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{post}"/>"#,
            r#"</md:IDPSSODescriptor></md:EntityDescriptor>"#
        ),
        entity = SAML_IDP_ENTITY,
        cert = STANDARD.encode(&SAML_IDP_KEY.certificate_der),
        redirect = SAML_IDP_SSO_REDIRECT,
        post = SAML_IDP_SSO_POST,
    )
}

/// What the browser brought to the IdP.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The AuthnRequest's ID (the response's InResponseTo).
    pub id: String,
    /// Where to post the response (the request's AssertionConsumerServiceURL).
    pub acs_url: String,
    /// The SP's entity ID (the request's Issuer; the Audience).
    pub sp_entity_id: String,
    /// The RelayState to post back.
    pub relay_state: String,
    /// The request's Destination.
    pub destination: String,
}

fn attribute(xml: &str, name: &str) -> String {
    let start = xml.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
    xml[start..start + xml[start..].find('"').expect("quote")].to_owned()
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn read_request(xml: &str, relay_state: String) -> ReceivedRequest {
    let issuer_start = xml.find("<saml:Issuer>").expect("Issuer") + "<saml:Issuer>".len();
    let issuer_end = issuer_start + xml[issuer_start..].find('<').expect("Issuer end");
    ReceivedRequest {
        id: attribute(xml, "ID"),
        acs_url: unescape(&attribute(xml, "AssertionConsumerServiceURL")),
        sp_entity_id: unescape(&xml[issuer_start..issuer_end]),
        destination: unescape(&attribute(xml, "Destination")),
        relay_state,
    }
}

impl ReceivedRequest {
    /// The request carried by an HTTP-Redirect URL (DEFLATE, base64).
    pub fn from_redirect(url: &str) -> Self {
        let url = url::Url::parse(url).expect("redirect URL");
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .expect(name)
        };
        let deflated = STANDARD.decode(param("SAMLRequest")).expect("base64");
        let mut xml = String::new();
        flate2::read::DeflateDecoder::new(deflated.as_slice())
            .read_to_string(&mut xml)
            .expect("DEFLATE");
        let mut request = read_request(&xml, param("RelayState"));
        request.destination = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.path()
        );
        request
    }

    /// The request carried by an HTTP-POST binding page (the form's fields).
    pub fn from_post_form(html: &str) -> Self {
        let field = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            let start = html.find(&marker).expect(name) + marker.len();
            unescape(&html[start..start + html[start..].find('"').expect("quote")])
        };
        let xml = String::from_utf8(STANDARD.decode(field("SAMLRequest")).expect("base64"))
            .expect("UTF-8");
        read_request(&xml, field("RelayState"))
    }
}

/// Who signs in, and with which attributes.
#[derive(Debug, Clone)]
pub struct SamlUser {
    /// The NameID's raw XML content (it may hold a comment).
    pub name_id: String,
    pub groups: Vec<String>,
    pub display_name: Option<String>,
}

impl SamlUser {
    pub fn new(name_id: &str, groups: &[&str]) -> Self {
        Self {
            name_id: name_id.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            display_name: Some("Saml User".to_owned()),
        }
    }
}

/// How a response is made wrong (or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SamlTamper {
    /// A correct response, the assertion signed by the IdP.
    None,
    /// The whole Response signed instead of the assertion (also correct).
    SignResponse,
    /// No signature at all.
    Unsigned,
    /// Signed by a key the IdP does not publish.
    RogueKey,
    /// The IdP-signed assertion kept (moved into `samlp:Extensions`) and an
    /// unsigned assertion for `name_id` put where the application reads.
    WrapInExtensions(String),
    /// A second, unsigned assertion for `name_id` beside the signed one.
    WrapBeside(String),
    /// The signed assertion's NameID replaced after signing.
    AlterAfterSigning(String),
    /// NotOnOrAfter this long ago.
    Expired(Duration),
    /// Another Audience.
    Audience(String),
    /// Another InResponseTo.
    InResponseTo(String),
    /// Another Destination and Recipient.
    Destination(String),
    /// This assertion ID instead of a fresh one.
    AssertionId(String),
}

fn instant(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .expect("instant")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("instant")
}

fn random_id() -> String {
    format!("_{}", uuid::Uuid::now_v7().simple())
}

struct Parts<'a> {
    user: &'a SamlUser,
    assertion_id: String,
    audience: String,
    in_response_to: String,
    destination: String,
    not_on_or_after: OffsetDateTime,
    now: OffsetDateTime,
}

impl Parts<'_> {
    fn assertion(&self, id: &str, name_id: &str) -> String {
        let groups: String = self
            .user
            .groups
            .iter()
            .map(|g| format!("<saml:AttributeValue>{g}</saml:AttributeValue>"))
            .collect();
        let display = self
            .user
            .display_name
            .as_deref()
            .map(|n| format!(r#"<saml:Attribute Name="displayName"><saml:AttributeValue>{n}</saml:AttributeValue></saml:Attribute>"#))
            .unwrap_or_default();
        format!(
            concat!(
                r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{issued}">"#,
                r#"<saml:Issuer>{issuer}</saml:Issuer>"#,
                r#"<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{name_id}</saml:NameID>"#,
                r#"<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">"#,
                r#"<saml:SubjectConfirmationData InResponseTo="{irt}" NotOnOrAfter="{until}" Recipient="{recipient}"/>"#,
                r#"</saml:SubjectConfirmation></saml:Subject>"#,
                r#"<saml:Conditions NotBefore="{not_before}" NotOnOrAfter="{until}">"#,
                r#"<saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions>"#,
                r#"<saml:AuthnStatement AuthnInstant="{issued}" SessionIndex="_session1"><saml:AuthnContext>"#,
                r#"<saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef>"#,
                r#"</saml:AuthnContext></saml:AuthnStatement>"#,
                r#"<saml:AttributeStatement><saml:Attribute Name="groups">{groups}</saml:Attribute>{display}</saml:AttributeStatement>"#,
                r#"</saml:Assertion>"#
            ),
            id = id,
            issued = instant(self.now),
            issuer = SAML_IDP_ENTITY,
            name_id = name_id,
            irt = self.in_response_to,
            until = instant(self.not_on_or_after),
            recipient = self.destination,
            not_before = instant(self.now - Duration::minutes(1)),
            audience = self.audience,
            groups = groups,
            display = display,
        )
    }

    fn response(&self, response_id: &str, content: &str, extensions: &str) -> String {
        format!(
            concat!(
                r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="{id}" Version="2.0" IssueInstant="{issued}" Destination="{destination}" InResponseTo="{irt}">"#,
                r#"<saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">{issuer}</saml:Issuer>{extensions}"#,
                r#"<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>"#,
                r#"{content}</samlp:Response>"#
            ),
            id = response_id,
            issued = instant(self.now),
            destination = self.destination,
            irt = self.in_response_to,
            issuer = SAML_IDP_ENTITY,
            extensions = extensions,
            content = content,
        )
    }
}

fn sign_with(xml: &str, id: &str, key: &SamlKey) -> String {
    sign_enveloped(xml, id, RSA_SHA256, |message| key.sign(message)).expect("signing")
}

/// The IdP's answer to `request` for `user` at `now`, made wrong as
/// `tamper` says: the `SAMLResponse` form value (base64).
pub fn saml_response(
    request: &ReceivedRequest,
    user: &SamlUser,
    tamper: &SamlTamper,
    now: OffsetDateTime,
) -> String {
    let mut parts = Parts {
        user,
        assertion_id: random_id(),
        audience: request.sp_entity_id.clone(),
        in_response_to: request.id.clone(),
        destination: request.acs_url.clone(),
        not_on_or_after: now + Duration::minutes(5),
        now,
    };
    match tamper {
        SamlTamper::Expired(ago) => parts.not_on_or_after = now - *ago,
        SamlTamper::Audience(audience) => parts.audience = audience.clone(),
        SamlTamper::InResponseTo(id) => parts.in_response_to = id.clone(),
        SamlTamper::Destination(url) => parts.destination = url.clone(),
        SamlTamper::AssertionId(id) => parts.assertion_id = id.clone(),
        _ => {}
    }
    let response_id = random_id();
    let assertion_id = parts.assertion_id.clone();
    let genuine = parts.assertion(&assertion_id, &user.name_id);
    let signed_assertion = || {
        let unsigned = parts.response(&response_id, &genuine, "");
        let signed = sign_with(&unsigned, &assertion_id, &SAML_IDP_KEY);
        let start = signed.find("<saml:Assertion").expect("assertion");
        let end = signed.find("</samlp:Response>").expect("end");
        signed[start..end].to_owned()
    };
    let xml = match tamper {
        SamlTamper::Unsigned => parts.response(&response_id, &genuine, ""),
        SamlTamper::RogueKey => sign_with(
            &parts.response(&response_id, &genuine, ""),
            &assertion_id,
            &SAML_ROGUE_KEY,
        ),
        SamlTamper::SignResponse => sign_with(
            &parts.response(&response_id, &genuine, ""),
            &response_id,
            &SAML_IDP_KEY,
        ),
        SamlTamper::WrapInExtensions(evil) => {
            let extensions = format!(
                "<samlp:Extensions>{}</samlp:Extensions>",
                signed_assertion()
            );
            let forged = parts.assertion(&random_id(), evil);
            parts.response(&response_id, &forged, &extensions)
        }
        SamlTamper::WrapBeside(evil) => {
            let forged = parts.assertion(&random_id(), evil);
            parts.response(&response_id, &format!("{forged}{}", signed_assertion()), "")
        }
        SamlTamper::AlterAfterSigning(evil) => {
            let signed = signed_assertion().replace(&user.name_id, evil);
            parts.response(&response_id, &signed, "")
        }
        _ => parts.response(&response_id, &signed_assertion(), ""),
    };
    STANDARD.encode(xml.as_bytes())
}
