//! Refusals other than wrapping: keys, algorithms, conditions, parser attacks.

use time::Duration;

use super::{
    ACS_URL, ATTACKER_KEY, DIGEST_SHA256, ECDSA_KEY, ECDSA_SHA256, IDP_ENTITY, IDP_KEY, NOW,
    REQUEST_ID, ResponseParts, SignOptions, check, check_with, encode, expectations, idp_config,
    sign, signed_response,
};
use crate::saml::{SamlError, validate_response};

#[test]
fn a_verified_assertion_carries_what_the_signed_assertion_says() {
    let verified = check(&signed_response(&ResponseParts::default())).unwrap();
    assert_eq!(verified.assertion_id, "_assert1");
    assert_eq!(verified.issuer, IDP_ENTITY);
    assert_eq!(verified.name_id, "alice@acme.example.test");
    assert_eq!(
        verified.name_id_format,
        "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
    );
    assert_eq!(verified.session_index.as_deref(), Some("_session7"));
    assert_eq!(
        verified.attributes.get("groups").unwrap(),
        &vec!["staff".to_owned(), "R&D <lab>".to_owned()]
    );
    assert_eq!(
        verified.attributes.get("email").unwrap(),
        &vec!["alice@acme.example.test".to_owned()]
    );
    assert_eq!(verified.not_on_or_after, NOW + Duration::minutes(5));
}

#[test]
fn a_response_level_signature_covers_the_assertion() {
    let parts = ResponseParts::default();
    let xml = sign(&parts.response(), &parts.response_id, &SignOptions::idp());
    assert_eq!(check(&xml).unwrap().name_id, "alice@acme.example.test");
}

#[test]
fn response_and_assertion_both_signed_are_accepted() {
    let parts = ResponseParts::default();
    let xml = sign(
        &signed_response(&parts),
        &parts.response_id,
        &SignOptions::idp(),
    );
    assert_eq!(check(&xml).unwrap().assertion_id, "_assert1");
}

#[test]
fn an_ecdsa_p256_signature_is_accepted() {
    let parts = ResponseParts::default();
    let options = SignOptions {
        signature_method: ECDSA_SHA256,
        ..SignOptions::with_key(&ECDSA_KEY)
    };
    let xml = sign(&parts.response(), &parts.assertion_id, &options);
    assert!(check(&xml).is_ok());
}

#[test]
fn an_idp_initiated_response_is_accepted_without_in_response_to() {
    let parts = ResponseParts::default();
    let xml = signed_response(&parts).replace(&format!(r#" InResponseTo="{REQUEST_ID}""#), "");
    // Removing it from the signed assertion breaks the digest: sign anew.
    let unsolicited = parts
        .response()
        .replace(&format!(r#" InResponseTo="{REQUEST_ID}""#), "");
    let signed = sign(&unsolicited, &parts.assertion_id, &SignOptions::idp());
    assert!(check_with(&signed, |expect| expect.in_response_to = None).is_ok());
    assert_eq!(
        check_with(&xml, |expect| expect.in_response_to = None),
        Err(SamlError::DigestMismatch)
    );
}

#[test]
fn an_unsigned_assertion_is_refused() {
    assert_eq!(
        check(&ResponseParts::default().response()),
        Err(SamlError::Unsigned)
    );
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let parts = ResponseParts::default();
    let xml = sign(
        &parts.response(),
        &parts.assertion_id,
        &SignOptions::with_key(&ATTACKER_KEY),
    );
    assert_eq!(check(&xml), Err(SamlError::BadSignature));
}

#[test]
fn an_attacker_certificate_in_key_info_is_never_used() {
    let parts = ResponseParts::default();
    let options = SignOptions {
        key_info_certificate: Some(ATTACKER_KEY.certificate_der.clone()),
        ..SignOptions::with_key(&ATTACKER_KEY)
    };
    let xml = sign(&parts.response(), &parts.assertion_id, &options);
    assert!(xml.contains("<ds:X509Certificate>"));
    assert_eq!(check(&xml), Err(SamlError::BadSignature));
    // And the genuine key with an attacker's KeyInfo still verifies: KeyInfo
    // plays no part.
    let genuine = SignOptions {
        key_info_certificate: Some(ATTACKER_KEY.certificate_der.clone()),
        ..SignOptions::idp()
    };
    assert!(check(&sign(&parts.response(), &parts.assertion_id, &genuine)).is_ok());
}

#[test]
fn a_signature_by_a_rolled_over_certificate_is_accepted_when_configured() {
    let parts = ResponseParts::default();
    let xml = signed_response(&parts);
    let mut idp = idp_config();
    idp.signing_certificates = vec![ATTACKER_KEY.certificate_der.clone()];
    assert_eq!(
        validate_response(&encode(&xml), &idp, &expectations()),
        Err(SamlError::BadSignature)
    );
    idp.signing_certificates
        .push(IDP_KEY.certificate_der.clone());
    assert!(validate_response(&encode(&xml), &idp, &expectations()).is_ok());
}

#[test]
fn sha1_is_refused() {
    let parts = ResponseParts::default();
    let sha1_digest = SignOptions {
        digest_method: "http://www.w3.org/2000/09/xmldsig#sha1",
        ..SignOptions::idp()
    };
    assert!(matches!(
        check(&sign(&parts.response(), &parts.assertion_id, &sha1_digest)),
        Err(SamlError::WeakOrUnknownAlgorithm(_))
    ));
    let sha1_signature = SignOptions {
        signature_method: "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        digest_method: DIGEST_SHA256,
        ..SignOptions::idp()
    };
    assert!(matches!(
        check(&sign(
            &parts.response(),
            &parts.assertion_id,
            &sha1_signature
        )),
        Err(SamlError::WeakOrUnknownAlgorithm(_))
    ));
}

#[test]
fn an_expired_assertion_is_refused() {
    let xml = signed_response(&ResponseParts::default());
    assert_eq!(
        check_with(&xml, |expect| expect.now = NOW + Duration::minutes(10)),
        Err(SamlError::Expired)
    );
    // Within the clock skew it still holds.
    assert!(check_with(&xml, |expect| expect.now = NOW + Duration::seconds(330)).is_ok());
}

#[test]
fn a_not_before_in_the_future_is_refused() {
    let parts = ResponseParts {
        not_before: NOW + Duration::minutes(3),
        ..ResponseParts::default()
    };
    assert_eq!(check(&signed_response(&parts)), Err(SamlError::NotYetValid));
}

#[test]
fn a_wrong_audience_is_refused() {
    let parts = ResponseParts {
        audience: "https://other-sp.example.test".to_owned(),
        ..ResponseParts::default()
    };
    assert_eq!(check(&signed_response(&parts)), Err(SamlError::Audience));
    let xml = signed_response(&ResponseParts::default());
    assert_eq!(
        check_with(&xml, |expect| expect.sp_entity_id =
            "https://other".to_owned()),
        Err(SamlError::Audience)
    );
}

#[test]
fn a_wrong_recipient_is_refused() {
    let parts = ResponseParts {
        recipient: "https://evil.example.test/acs".to_owned(),
        ..ResponseParts::default()
    };
    assert_eq!(check(&signed_response(&parts)), Err(SamlError::Recipient));
}

#[test]
fn a_wrong_destination_is_refused() {
    let parts = ResponseParts {
        destination: "https://evil.example.test/acs".to_owned(),
        ..ResponseParts::default()
    };
    assert_eq!(check(&signed_response(&parts)), Err(SamlError::Destination));
    // A signed response must carry a Destination.
    let parts = ResponseParts::default();
    let without = parts
        .response()
        .replace(&format!(r#" Destination="{ACS_URL}""#), "");
    let signed = sign(&without, &parts.response_id, &SignOptions::idp());
    assert_eq!(check(&signed), Err(SamlError::Destination));
}

#[test]
fn a_wrong_in_response_to_is_refused() {
    let xml = signed_response(&ResponseParts::default());
    assert_eq!(
        check_with(&xml, |expect| expect.in_response_to =
            Some("_other".to_owned())),
        Err(SamlError::InResponseTo)
    );
    // An IdP-initiated sign-in must not answer some other request.
    assert_eq!(
        check_with(&xml, |expect| expect.in_response_to = None),
        Err(SamlError::InResponseTo)
    );
}

#[test]
fn a_wrong_issuer_is_refused() {
    let parts = ResponseParts {
        issuer: "https://evil-idp.example.test".to_owned(),
        ..ResponseParts::default()
    };
    assert_eq!(check(&signed_response(&parts)), Err(SamlError::Issuer));
}

#[test]
fn a_comment_inside_the_name_id_never_truncates_it() {
    // Signed with the comment: the canonical (signed) text is the whole.
    let parts = ResponseParts {
        name_id: "admin@evil.test<!---->.attacker.test".to_owned(),
        ..ResponseParts::default()
    };
    let verified = check(&signed_response(&parts)).unwrap();
    assert_eq!(verified.name_id, "admin@evil.test.attacker.test");
    // A comment added after signing (comments are not signed): same text.
    let parts = ResponseParts {
        name_id: "admin@evil.test.attacker.test".to_owned(),
        ..ResponseParts::default()
    };
    let xml = signed_response(&parts).replace(
        "admin@evil.test.attacker.test",
        "admin@evil.test<!---->.attacker.test",
    );
    assert_eq!(
        check(&xml).unwrap().name_id,
        "admin@evil.test.attacker.test"
    );
}

#[test]
fn changing_one_attribute_value_after_signing_fails_the_digest() {
    let xml = signed_response(&ResponseParts::default());
    let tampered = xml.replace(
        "<saml:AttributeValue>staff</saml:AttributeValue>",
        "<saml:AttributeValue>admins</saml:AttributeValue>",
    );
    assert_ne!(tampered, xml);
    assert_eq!(check(&tampered), Err(SamlError::DigestMismatch));
}

#[test]
fn a_doctype_is_refused() {
    let xml = signed_response(&ResponseParts::default());
    let with_dtd = xml.replacen(
        "<samlp:Response",
        "<!DOCTYPE r [<!ENTITY x \"alice\">]>\n<samlp:Response",
        1,
    );
    assert_eq!(check(&with_dtd), Err(SamlError::DtdForbidden));
    let xxe = xml.replacen(
        "<samlp:Response",
        "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n<samlp:Response",
        1,
    );
    assert_eq!(check(&xxe), Err(SamlError::DtdForbidden));
}

#[test]
fn billion_laughs_is_refused() {
    let mut dtd = String::from("<!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for level in 1..10 {
        let previous = if level == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", level - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{level} \"{}\">",
            format!("&{previous};").repeat(10)
        ));
    }
    dtd.push_str("]>");
    let xml = format!(
        "{dtd}<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\">&lol9;</samlp:Response>"
    );
    assert_eq!(check(&xml), Err(SamlError::DtdForbidden));
}

#[test]
fn a_processing_instruction_is_refused() {
    let xml = signed_response(&ResponseParts::default()).replacen(
        "<samlp:Status>",
        "<?evil data?><samlp:Status>",
        1,
    );
    assert_eq!(check(&xml), Err(SamlError::ProcessingInstructionForbidden));
}

#[test]
fn oversized_input_is_refused() {
    let huge = "A".repeat(crate::saml::MAX_SAML_RESPONSE_BASE64_BYTES + 1);
    assert!(matches!(
        validate_response(&huge, &idp_config(), &expectations()),
        Err(SamlError::TooLarge { .. })
    ));
    let padded = signed_response(&ResponseParts::default()).replacen(
        "<samlp:Status>",
        &format!("<!--{}--><samlp:Status>", "x".repeat(600 * 1024)),
        1,
    );
    assert!(matches!(check(&padded), Err(SamlError::TooLarge { .. })));
}

#[test]
fn an_encrypted_assertion_is_refused_as_unsupported() {
    let parts = ResponseParts::default();
    let xml = parts.response_with(
        r#"<saml:EncryptedAssertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"><xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"/></saml:EncryptedAssertion>"#,
    );
    assert_eq!(check(&xml), Err(SamlError::EncryptedAssertionUnsupported));
}

#[test]
fn a_failed_status_is_reported() {
    let parts = ResponseParts {
        status: "urn:oasis:names:tc:SAML:2.0:status:Responder".to_owned(),
        ..ResponseParts::default()
    };
    assert_eq!(
        check(&parts.response_with("")),
        Err(SamlError::Status("Responder".to_owned()))
    );
}

#[test]
fn malformed_input_is_refused_without_panicking() {
    for input in ["", "not base64!", "PHNhbWxwOlJlc3BvbnNl", "//79"] {
        assert!(validate_response(input, &idp_config(), &expectations()).is_err());
    }
    assert_eq!(
        check("<Response xmlns=\"urn:other\"/>"),
        Err(SamlError::UnexpectedRoot {
            expected: "samlp:Response"
        })
    );
}

#[test]
fn extreme_instants_do_not_overflow() {
    let parts = ResponseParts {
        not_on_or_after: time::macros::datetime!(9999-12-31 23:59:59 UTC),
        ..ResponseParts::default()
    };
    assert!(check(&signed_response(&parts)).is_ok());
    let xml = signed_response(&ResponseParts::default());
    assert!(matches!(
        check_with(&xml, |expect| expect.clock_skew = Duration::MAX),
        Err(SamlError::Invalid { .. })
    ));
}
