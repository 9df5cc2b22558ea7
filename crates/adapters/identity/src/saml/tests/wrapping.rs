//! XML signature wrapping (XSW): a genuine signature kept valid while the
//! data read comes from an element the attacker wrote. The shapes follow the
//! usual XSW catalogue (SAML Raider's XSW1-XSW8).

use super::{ResponseParts, SignOptions, check, sign, signed_response};
use crate::saml::SamlError;

/// An unsigned assertion for the attacker's chosen user.
fn evil_assertion(id: &str) -> String {
    ResponseParts {
        assertion_id: id.to_owned(),
        name_id: "admin@acme.example.test".to_owned(),
        ..ResponseParts::default()
    }
    .assertion()
}

/// The signed assertion element cut out of a signed response.
fn signed_assertion(parts: &ResponseParts) -> String {
    let xml = signed_response(parts);
    let start = xml.find("<saml:Assertion").unwrap();
    let end = xml.rfind("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    xml[start..end].to_owned()
}

#[test]
fn the_genuine_signed_response_is_accepted() {
    let verified = check(&signed_response(&ResponseParts::default())).unwrap();
    assert_eq!(verified.name_id, "alice@acme.example.test");
}

#[test]
fn an_unsigned_evil_assertion_before_the_signed_one_is_refused() {
    let parts = ResponseParts::default();
    let both = format!("{}\n{}", evil_assertion("_evil"), signed_assertion(&parts));
    assert_eq!(
        check(&parts.response_with(&both)),
        Err(SamlError::AssertionCount)
    );
}

#[test]
fn an_unsigned_evil_assertion_after_the_signed_one_is_refused() {
    let parts = ResponseParts::default();
    let both = format!("{}\n{}", signed_assertion(&parts), evil_assertion("_evil"));
    assert_eq!(
        check(&parts.response_with(&both)),
        Err(SamlError::AssertionCount)
    );
}

#[test]
fn the_signed_assertion_moved_into_extensions_with_an_evil_one_in_its_place_is_refused() {
    let parts = ResponseParts::default();
    let wrapped = format!(
        "<samlp:Extensions>{}</samlp:Extensions>\n{}",
        signed_assertion(&parts),
        evil_assertion("_evil")
    );
    assert_eq!(
        check(&parts.response_with(&wrapped)),
        Err(SamlError::AssertionCount)
    );
}

#[test]
fn the_signed_assertion_moved_into_extensions_with_an_evil_one_of_the_same_id_is_refused() {
    let parts = ResponseParts::default();
    let wrapped = format!(
        "<samlp:Extensions>{}</samlp:Extensions>\n{}",
        signed_assertion(&parts),
        evil_assertion(&parts.assertion_id)
    );
    assert_eq!(
        check(&parts.response_with(&wrapped)),
        Err(SamlError::DuplicateId)
    );
}

#[test]
fn the_signed_assertion_moved_into_the_evil_assertions_signature_object_is_refused() {
    // XSW: the evil assertion carries the genuine Signature, whose ds:Object
    // holds the genuine signed assertion the Reference points at.
    let parts = ResponseParts::default();
    let genuine = signed_assertion(&parts);
    let signature_start = genuine.find("<ds:Signature").unwrap();
    let signature_end = genuine.find("</ds:Signature>").unwrap();
    let signature_open = &genuine[signature_start..signature_end];
    let evil = evil_assertion("_evil").replacen(
        "</saml:Issuer>",
        &format!("</saml:Issuer>{signature_open}<ds:Object>{genuine}</ds:Object></ds:Signature>"),
        1,
    );
    assert_eq!(
        check(&parts.response_with(&evil)),
        Err(SamlError::AssertionCount)
    );
}

#[test]
fn a_signature_moved_from_the_signed_assertion_onto_an_evil_one_is_refused() {
    // Only the evil assertion in the document, carrying the genuine signature
    // whose Reference names the genuine assertion's ID.
    let parts = ResponseParts::default();
    let genuine = signed_assertion(&parts);
    let signature_start = genuine.find("<ds:Signature").unwrap();
    let signature_end = genuine.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let evil = evil_assertion("_evil").replacen(
        "</saml:Issuer>",
        &format!("</saml:Issuer>{}", &genuine[signature_start..signature_end]),
        1,
    );
    assert_eq!(
        check(&parts.response_with(&evil)),
        Err(SamlError::SignatureReference)
    );
}

#[test]
fn a_genuine_signature_given_the_evil_assertions_id_fails_its_digest() {
    let parts = ResponseParts::default();
    let genuine = signed_assertion(&parts);
    let signature_start = genuine.find("<ds:Signature").unwrap();
    let signature_end = genuine.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let evil = evil_assertion(&parts.assertion_id).replacen(
        "</saml:Issuer>",
        &format!("</saml:Issuer>{}", &genuine[signature_start..signature_end]),
        1,
    );
    assert_eq!(
        check(&parts.response_with(&evil)),
        Err(SamlError::DigestMismatch)
    );
}

#[test]
fn a_response_signature_whose_reference_points_to_another_element_is_refused() {
    // The IdP signed some other Response (e.g. an error). The attacker moves
    // that signature onto a new Response holding an unsigned evil assertion
    // and keeps the originally signed element in Extensions.
    let original = ResponseParts {
        response_id: "_original".to_owned(),
        ..ResponseParts::default()
    };
    let signed_error = sign(
        &original.response_with(""),
        &original.response_id,
        &SignOptions::idp(),
    );
    let start = signed_error.find("<samlp:Response").unwrap();
    let signed_element = &signed_error[start..];
    let signature_start = signed_element.find("<ds:Signature").unwrap();
    let signature_end = signed_element.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let signature = &signed_element[signature_start..signature_end];
    let without_signature = format!(
        "{}{}",
        &signed_element[..signature_start],
        &signed_element[signature_end..]
    );
    let parts = ResponseParts {
        response_id: "_evil_response".to_owned(),
        ..ResponseParts::default()
    };
    let attack = parts.response_with(&format!(
        "{signature}<samlp:Extensions>{without_signature}</samlp:Extensions>{}",
        evil_assertion("_evil")
    ));
    assert_eq!(check(&attack), Err(SamlError::SignatureReference));
}

#[test]
fn a_signature_whose_reference_names_another_element_is_refused_even_when_valid() {
    // A valid signature (made by the IdP key) over the assertion, but placed
    // on the Response: the Response itself is not what it covers.
    let parts = ResponseParts::default();
    let options = SignOptions {
        reference_uri: Some(format!("#{}", parts.assertion_id)),
        ..SignOptions::idp()
    };
    let xml = sign(&parts.response(), &parts.response_id, &options);
    assert_eq!(check(&xml), Err(SamlError::SignatureReference));
}

#[test]
fn duplicate_ids_anywhere_are_refused() {
    let parts = ResponseParts::default();
    let xml = signed_response(&parts).replacen(
        "<samlp:Status>",
        &format!(
            r#"<samlp:Extensions><x:Note xmlns:x="urn:x" ID="{}"/></samlp:Extensions><samlp:Status>"#,
            parts.assertion_id
        ),
        1,
    );
    assert_eq!(check(&xml), Err(SamlError::DuplicateId));
}

#[test]
fn an_evil_assertion_in_advice_is_refused() {
    let parts = ResponseParts::default();
    let evil = ResponseParts {
        assertion_id: "_assert1".to_owned(),
        ..ResponseParts::default()
    }
    .assertion()
    .replacen(
        "</saml:AuthnStatement>",
        &format!(
            "</saml:AuthnStatement><saml:Advice>{}</saml:Advice>",
            evil_assertion("_evil")
        ),
        1,
    );
    let xml = sign(
        &parts.response_with(&evil),
        &parts.assertion_id,
        &SignOptions::idp(),
    );
    assert_eq!(check(&xml), Err(SamlError::AssertionCount));
}

#[test]
fn an_assertion_outside_the_response_children_is_refused() {
    let parts = ResponseParts::default();
    let xml = sign(
        &parts.response_with(&format!(
            "<samlp:Extensions>{}</samlp:Extensions>",
            parts.assertion()
        )),
        &parts.assertion_id,
        &SignOptions::idp(),
    );
    assert_eq!(check(&xml), Err(SamlError::AssertionCount));
}
