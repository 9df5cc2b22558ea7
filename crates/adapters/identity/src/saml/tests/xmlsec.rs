//! The verifier against responses signed by an independent implementation
//! (the `xmlsec1` tool; see tests/fixtures/README.md), and the test signer
//! against `xmlsec1 --verify` (run by hand: it needs the tool installed).

use super::{ResponseParts, expectations, signed_response};
use crate::saml::{IdpConfig, SamlError, SsoBinding, validate_response_xml};

const RSA_SIGNED: &str = include_str!("../../../tests/fixtures/xmlsec1-rsa-signed-assertion.xml");
const RSA_CERT: &str = include_str!("../../../tests/fixtures/xmlsec1-rsa-cert.pem");
const ECDSA_SIGNED: &str =
    include_str!("../../../tests/fixtures/xmlsec1-ecdsa-signed-response.xml");
const ECDSA_CERT: &str = include_str!("../../../tests/fixtures/xmlsec1-ecdsa-cert.pem");

fn idp(pem: &str) -> IdpConfig {
    IdpConfig::from_pem(
        super::IDP_ENTITY,
        "https://idp.example.test/sso",
        SsoBinding::HttpRedirect,
        pem,
    )
    .unwrap()
}

#[test]
fn an_assertion_signed_by_xmlsec1_with_rsa_verifies() {
    let verified = validate_response_xml(RSA_SIGNED, &idp(RSA_CERT), &expectations()).unwrap();
    assert_eq!(verified.assertion_id, "_xmlsec_assertion");
    // The comment inside the NameID neither cuts nor survives.
    assert_eq!(verified.name_id, "bob@acme.example.test");
    assert_eq!(verified.session_index.as_deref(), Some("_xmlsec_session"));
    assert_eq!(
        verified.attributes.get("displayName").unwrap(),
        &vec![r#"Bob & "Bobby" <Builder>"#.to_owned()]
    );
    assert_eq!(
        verified.attributes.get("groups").unwrap(),
        &vec!["engineering".to_owned(), "café ☕".to_owned()]
    );
}

#[test]
fn a_response_signed_by_xmlsec1_with_ecdsa_verifies() {
    let verified = validate_response_xml(ECDSA_SIGNED, &idp(ECDSA_CERT), &expectations()).unwrap();
    assert_eq!(verified.name_id, "carol@acme.example.test");
}

#[test]
fn xmlsec1_signatures_fail_with_the_wrong_certificate_or_after_tampering() {
    assert_eq!(
        validate_response_xml(RSA_SIGNED, &idp(ECDSA_CERT), &expectations()),
        Err(SamlError::BadSignature)
    );
    let tampered = RSA_SIGNED.replace("engineering", "administrators");
    assert_eq!(
        validate_response_xml(&tampered, &idp(RSA_CERT), &expectations()),
        Err(SamlError::DigestMismatch)
    );
    let tampered = ECDSA_SIGNED.replace("carol@acme", "admin@acme");
    assert_eq!(
        validate_response_xml(&tampered, &idp(ECDSA_CERT), &expectations()),
        Err(SamlError::DigestMismatch)
    );
}

/// Proves the test signer (and so our C14N) against xmlsec1. Run with
/// `cargo nextest run -p karen-identity --run-ignored all xmlsec1` after
/// `apt-get install xmlsec1`.
#[test]
#[ignore = "needs the xmlsec1 tool (Debian package xmlsec1)"]
fn the_test_signer_output_verifies_with_xmlsec1() {
    let directory = std::env::temp_dir().join(format!("karen-saml-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let certificate = directory.join("idp.pem");
    std::fs::write(&certificate, &super::IDP_KEY.certificate_pem).unwrap();
    let parts = ResponseParts {
        name_id: "dave@acme<!-- c -->.example.test".to_owned(),
        ..ResponseParts::default()
    };
    let cases = [
        (
            "assertion.xml",
            signed_response(&parts),
            "assertion:Assertion",
        ),
        (
            "response.xml",
            super::sign(
                &parts.response(),
                &parts.response_id,
                &super::SignOptions::idp(),
            ),
            "protocol:Response",
        ),
    ];
    for (name, xml, id_node) in cases {
        let path = directory.join(name);
        std::fs::write(&path, xml).unwrap();
        let output = std::process::Command::new("xmlsec1")
            .arg("--verify")
            .arg("--pubkey-cert-pem")
            .arg(&certificate)
            .arg("--id-attr:ID")
            .arg(format!("urn:oasis:names:tc:SAML:2.0:{id_node}"))
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::remove_dir_all(&directory).unwrap();
}
