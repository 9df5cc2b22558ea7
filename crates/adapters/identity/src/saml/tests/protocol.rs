//! Metadata in and out, and the AuthnRequest in both bindings.

use std::io::Read as _;

use base64::Engine as _;

use super::{ACS_URL, ATTACKER_KEY, IDP_ENTITY, IDP_KEY, NOW, SP_ENTITY, idp_config};
use crate::saml::{
    IdpConfig, SamlError, SpConfig, SsoBinding, authn_request, new_request_id, parse_idp_metadata,
    sp_metadata,
};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn idp_metadata() -> String {
    format!(
        r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{IDP_ENTITY}">
  <md:IDPSSODescriptor WantAuthnRequestsSigned="false" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>
{signing}
    </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{encryption}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.test/sso/redirect"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.example.test/sso/post"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#,
        // Line-wrapped, as many IdPs publish it.
        signing = b64(&IDP_KEY.certificate_der)
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect::<Vec<_>>()
            .join("\n"),
        encryption = b64(&ATTACKER_KEY.certificate_der),
    )
}

#[test]
fn idp_metadata_gives_entity_sso_urls_and_only_signing_certificates() {
    let idp = parse_idp_metadata(&idp_metadata()).unwrap();
    assert_eq!(idp.entity_id, IDP_ENTITY);
    assert_eq!(
        idp.sso_redirect_url.as_deref(),
        Some("https://idp.example.test/sso/redirect")
    );
    assert_eq!(
        idp.sso_post_url.as_deref(),
        Some("https://idp.example.test/sso/post")
    );
    assert_eq!(
        idp.signing_certificates,
        vec![IDP_KEY.certificate_der.clone()]
    );
}

#[test]
fn idp_metadata_in_an_entities_descriptor_and_without_use_is_read() {
    let single = idp_metadata().replace(r#" use="signing""#, "");
    let body = single.trim_start_matches(r#"<?xml version="1.0"?>"#);
    let wrapped = format!(
        r#"<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata">{body}</md:EntitiesDescriptor>"#
    );
    let idp = parse_idp_metadata(&wrapped).unwrap();
    assert!(idp.signing_certificates.contains(&IDP_KEY.certificate_der));
}

#[test]
fn idp_metadata_without_certificate_or_with_a_dtd_is_refused() {
    let no_signing = idp_metadata().replace(r#"use="signing""#, r#"use="encryption""#);
    assert!(matches!(
        parse_idp_metadata(&no_signing),
        Err(SamlError::Missing { .. })
    ));
    let dtd = idp_metadata().replacen(
        "<md:EntityDescriptor",
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><md:EntityDescriptor",
        1,
    );
    assert_eq!(parse_idp_metadata(&dtd), Err(SamlError::DtdForbidden));
    let garbage_certificate =
        idp_metadata().replacen(&b64(&ATTACKER_KEY.certificate_der), "AAAA", 1);
    // The encryption certificate is not read, so garbage there is fine.
    assert!(parse_idp_metadata(&garbage_certificate).is_ok());
    assert!(matches!(
        parse_idp_metadata("<md:EntityDescriptor xmlns:md=\"urn:x\"/>"),
        Err(SamlError::UnexpectedRoot { .. })
    ));
}

#[test]
fn an_idp_is_configured_from_a_pem_certificate() {
    let idp = IdpConfig::from_pem(
        IDP_ENTITY,
        "https://idp.example.test/sso",
        SsoBinding::HttpPost,
        &IDP_KEY.certificate_pem,
    )
    .unwrap();
    assert_eq!(
        idp.signing_certificates,
        vec![IDP_KEY.certificate_der.clone()]
    );
    assert_eq!(idp.sso_redirect_url, None);
    assert!(matches!(
        IdpConfig::from_pem(IDP_ENTITY, "https://idp/sso", SsoBinding::HttpPost, "nope"),
        Err(SamlError::Certificate(_))
    ));
    assert!(matches!(
        IdpConfig::from_pem(
            IDP_ENTITY,
            "javascript:alert(1)",
            SsoBinding::HttpRedirect,
            &IDP_KEY.certificate_pem
        ),
        Err(SamlError::Invalid { .. })
    ));
}

#[test]
fn sp_metadata_describes_an_sp_wanting_signed_assertions() {
    let sp = SpConfig::new(SP_ENTITY, ACS_URL).unwrap();
    let xml = sp_metadata(&sp);
    let document = roxmltree::Document::parse(&xml).unwrap();
    let root = document.root_element();
    assert_eq!(root.attribute("entityID"), Some(SP_ENTITY));
    let descriptor = root.first_element_child().unwrap();
    assert_eq!(descriptor.tag_name().name(), "SPSSODescriptor");
    assert_eq!(descriptor.attribute("WantAssertionsSigned"), Some("true"));
    assert_eq!(descriptor.attribute("AuthnRequestsSigned"), Some("false"));
    let acs = descriptor
        .children()
        .find(|node| node.tag_name().name() == "AssertionConsumerService")
        .unwrap();
    assert_eq!(acs.attribute("Location"), Some(ACS_URL));
    assert_eq!(
        acs.attribute("Binding"),
        Some("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")
    );
    // Values are escaped.
    let odd = SpConfig::new("urn:a\"<b>&", "https://k.example.test/acs?a=1&b=2").unwrap();
    let parsed = roxmltree::Document::parse(&sp_metadata(&odd))
        .unwrap()
        .root_element()
        .attribute("entityID")
        .map(str::to_owned);
    assert_eq!(parsed.as_deref(), Some("urn:a\"<b>&"));
}

#[test]
fn the_redirect_binding_deflates_encodes_and_carries_relay_state() {
    let sp = SpConfig::new(SP_ENTITY, ACS_URL).unwrap();
    let mut idp = idp_config();
    idp.sso_redirect_url = Some("https://idp.example.test/sso?tenant=a".to_owned());
    let request = authn_request(&sp, &idp, "_req1", Some("st&te=1"), NOW).unwrap();
    let url = url::Url::parse(request.redirect_url.as_deref().unwrap()).unwrap();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs[0], ("tenant".to_owned(), "a".to_owned()));
    assert_eq!(pairs[2], ("RelayState".to_owned(), "st&te=1".to_owned()));
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(&pairs[1].1)
        .unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(deflated.as_slice())
        .read_to_string(&mut xml)
        .unwrap();
    assert_eq!(xml, request.xml);
    let document = roxmltree::Document::parse(&xml).unwrap();
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "AuthnRequest");
    assert_eq!(root.attribute("ID"), Some("_req1"));
    assert_eq!(root.attribute("IssueInstant"), Some("2026-12-02T21:00:00Z"));
    assert_eq!(root.attribute("AssertionConsumerServiceURL"), Some(ACS_URL));
    assert_eq!(
        root.attribute("Destination"),
        Some("https://idp.example.test/sso?tenant=a")
    );
    let issuer = root.first_element_child().unwrap();
    assert_eq!(issuer.text(), Some(SP_ENTITY));
}

#[test]
fn the_post_binding_is_an_escaped_self_submitting_form() {
    let sp = SpConfig::new(SP_ENTITY, ACS_URL).unwrap();
    let request = authn_request(&sp, &idp_config(), "_req1", Some("\"><script>x"), NOW).unwrap();
    let post = request.post.unwrap();
    assert_eq!(post.action, "https://idp.example.test/sso/post");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&post.saml_request)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), request.xml);
    let html = post.html(Some("n0nce"));
    assert!(html.contains(r#"value="&quot;&gt;&lt;script&gt;x""#));
    assert!(!html.contains("\"><script>x"));
    assert!(html.contains(r#"<script nonce="n0nce">document.forms[0].submit();</script>"#));
    assert!(html.contains(&format!(r#"value="{}""#, post.saml_request)));
}

#[test]
fn request_ids_and_relay_state_are_checked() {
    let sp = SpConfig::new(SP_ENTITY, ACS_URL).unwrap();
    let idp = idp_config();
    for bad in ["", "1abc", "a b", "a\"b", "-x"] {
        assert!(authn_request(&sp, &idp, bad, None, NOW).is_err(), "{bad}");
    }
    assert!(authn_request(&sp, &idp, "_ok", Some(&"x".repeat(81)), NOW).is_err());
    let id = new_request_id().unwrap();
    assert_eq!(id.len(), 33);
    assert!(id.starts_with('_'));
    assert_ne!(id, new_request_id().unwrap());
    assert!(authn_request(&sp, &idp, &id, None, NOW).is_ok());
}
