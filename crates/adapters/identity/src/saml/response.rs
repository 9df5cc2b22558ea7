//! Validation of a `samlp:Response` received at the assertion consumer
//! service (HTTP-POST binding).

use std::collections::{BTreeMap, HashSet};

use roxmltree::{Document, Node};
use time::{Duration, OffsetDateTime};

use super::assertion::read_assertion;
use super::config::{IdpConfig, SpConfig};
use super::dsig::verify_enveloped;
use super::error::SamlError;
use super::xml::{
    MAX_XML_BYTES, NS_DS, NS_SAML, NS_SAMLP, child_elements, children_named, decode_base64, is,
    optional_child, parse_untrusted, required_child, trimmed_text,
};

/// Clock difference tolerated between the IdP and us, unless told otherwise.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::seconds(90);
/// Largest `SAMLResponse` form value accepted (base64 of [`MAX_XML_BYTES`]).
pub const MAX_SAML_RESPONSE_BASE64_BYTES: usize = MAX_XML_BYTES / 3 * 4 + 4096;

const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// What the response must say for this sign-in to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// Our entityID: must be in every AudienceRestriction.
    pub sp_entity_id: String,
    /// Our ACS URL: the Response's Destination and the bearer Recipient.
    pub acs_url: String,
    /// The ID of the AuthnRequest this answers; `None` for an IdP-initiated
    /// sign-in, which then must not carry any InResponseTo.
    pub in_response_to: Option<String>,
    /// The current time (a parameter, so tests can move it).
    pub now: OffsetDateTime,
    /// Tolerated clock difference for NotBefore and NotOnOrAfter.
    pub clock_skew: Duration,
}

impl Expectations {
    /// Expectations for `sp`, answering `in_response_to` (or IdP-initiated),
    /// with [`DEFAULT_CLOCK_SKEW`].
    #[must_use]
    pub fn new(sp: &SpConfig, in_response_to: Option<&str>, now: OffsetDateTime) -> Self {
        Self {
            sp_entity_id: sp.entity_id.clone(),
            acs_url: sp.acs_url.clone(),
            in_response_to: in_response_to.map(str::to_owned),
            now,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }

    /// `now` minus and plus the skew. Times from the message are compared
    /// with these, never added to (a year-9999 instant must not overflow).
    pub(crate) fn window(&self) -> Result<(OffsetDateTime, OffsetDateTime), SamlError> {
        let skew = self.clock_skew.abs();
        match (self.now.checked_sub(skew), self.now.checked_add(skew)) {
            (Some(earliest), Some(latest)) => Ok((earliest, latest)),
            _ => Err(SamlError::Invalid { what: "clock skew" }),
        }
    }
}

/// What a valid, signed assertion says. Every field is read from inside the
/// element whose signature was verified.
///
/// The caller must keep `assertion_id` in a replay cache until
/// `not_on_or_after` plus the clock skew, and refuse a second use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The Assertion's ID: the replay-cache key.
    pub assertion_id: String,
    /// The asserting party (equals the configured IdP entity ID).
    pub issuer: String,
    /// The subject's NameID, the full text (comments do not cut it).
    pub name_id: String,
    /// The NameID's Format (`unspecified` when none is given).
    pub name_id_format: String,
    /// The first AuthnStatement's SessionIndex, for single logout.
    pub session_index: Option<String>,
    /// Attribute name -> text values, from every AttributeStatement (values
    /// holding XML elements are left out).
    pub attributes: BTreeMap<String, Vec<String>>,
    /// The assertion is unusable from this instant (the earlier of the
    /// bearer confirmation's and the Conditions' NotOnOrAfter).
    pub not_on_or_after: OffsetDateTime,
}

/// Validates the `SAMLResponse` form value (base64) of an HTTP-POST to the ACS
/// URL and returns the verified assertion.
///
/// Accepted only when the single `saml:Assertion` (a child of the Response) is
/// covered by a valid enveloped signature, on the Assertion or on the
/// Response, made by one of `idp.signing_certificates`; the Response has
/// status Success; issuers are the IdP; Destination, bearer Recipient,
/// InResponseTo, validity times and audience match `expect`.
pub fn validate_response(
    saml_response_base64: &str,
    idp: &IdpConfig,
    expect: &Expectations,
) -> Result<VerifiedAssertion, SamlError> {
    if saml_response_base64.len() > MAX_SAML_RESPONSE_BASE64_BYTES {
        return Err(SamlError::TooLarge {
            limit: MAX_SAML_RESPONSE_BASE64_BYTES,
        });
    }
    let bytes = decode_base64(saml_response_base64)?;
    let xml = String::from_utf8(bytes).map_err(|_| SamlError::NotUtf8)?;
    validate_response_xml(&xml, idp, expect)
}

/// [`validate_response`] on the decoded XML.
pub fn validate_response_xml(
    xml: &str,
    idp: &IdpConfig,
    expect: &Expectations,
) -> Result<VerifiedAssertion, SamlError> {
    let document = parse_untrusted(xml)?;
    let response = document.root_element();
    if !is(response, NS_SAMLP, "Response") {
        return Err(SamlError::UnexpectedRoot {
            expected: "samlp:Response",
        });
    }
    check_unique_ids(&document)?;
    if response.attribute("Version") != Some("2.0") {
        return Err(SamlError::Version);
    }
    check_status(response)?;
    if document
        .descendants()
        .any(|node| is(node, NS_SAML, "EncryptedAssertion"))
    {
        return Err(SamlError::EncryptedAssertionUnsupported);
    }

    // Exactly one Assertion in the whole document, a child of the Response:
    // no second one beside it, in Extensions, in a ds:Object or in Advice.
    let mut assertions = document
        .descendants()
        .filter(|node| is(*node, NS_SAML, "Assertion"));
    let assertion = assertions.next().ok_or(SamlError::AssertionCount)?;
    if assertions.next().is_some() || assertion.parent_element() != Some(response) {
        return Err(SamlError::AssertionCount);
    }

    let response_signed = verify_signatures(response, assertion, idp)?;

    // Response-level fields. Unsigned when only the assertion is signed, so
    // they can only refuse, never grant: everything returned comes from the
    // (signed) assertion.
    match response.attribute("Destination") {
        Some(destination) if destination == expect.acs_url => {}
        Some(_) => return Err(SamlError::Destination),
        // A signed response must name its destination (SAML bindings 3.5.5.2).
        None if response_signed => return Err(SamlError::Destination),
        None => {}
    }
    if response.attribute("InResponseTo") != expect.in_response_to.as_deref() {
        return Err(SamlError::InResponseTo);
    }
    if let Some(issuer) = optional_child(response, NS_SAML, "Issuer", "Response Issuer")? {
        check_issuer(issuer, idp)?;
    }

    read_assertion(assertion, idp, expect)
}

/// Verifies the signatures that may cover the assertion and returns whether
/// the Response itself is signed. A signature that is present must be valid.
fn verify_signatures(
    response: Node<'_, '_>,
    assertion: Node<'_, '_>,
    idp: &IdpConfig,
) -> Result<bool, SamlError> {
    let response_signature = optional_child(response, NS_DS, "Signature", "Response Signature")?;
    let assertion_signature = optional_child(assertion, NS_DS, "Signature", "Assertion Signature")?;
    let mut assertion_covered = false;
    if let Some(signature) = assertion_signature {
        let signed = verify_enveloped(signature, &idp.signing_certificates)?;
        // verify_enveloped returns the signature's parent: the assertion.
        assertion_covered = signed == assertion;
    }
    let mut response_signed = false;
    if let Some(signature) = response_signature {
        let signed = verify_enveloped(signature, &idp.signing_certificates)?;
        response_signed = signed == response;
        // The assertion is a child of the Response: covered by its digest.
        assertion_covered |= response_signed && assertion.parent_element() == Some(signed);
    }
    if !assertion_covered {
        return Err(SamlError::Unsigned);
    }
    Ok(response_signed)
}

/// Refuses a document where two elements share an identifier, whatever the
/// spelling of the ID attribute a signature library might resolve.
fn check_unique_ids(document: &Document<'_>) -> Result<(), SamlError> {
    let mut seen = HashSet::new();
    for node in document.descendants().filter(Node::is_element) {
        for attribute in node.attributes() {
            if attribute.namespace().is_none()
                && matches!(attribute.name(), "ID" | "Id" | "id" | "AssertionID")
                && !seen.insert(attribute.value())
            {
                return Err(SamlError::DuplicateId);
            }
        }
    }
    Ok(())
}

fn check_status(response: Node<'_, '_>) -> Result<(), SamlError> {
    let status = required_child(response, NS_SAMLP, "Status", "Status")?;
    let code = required_child(status, NS_SAMLP, "StatusCode", "StatusCode")?;
    let value = code.attribute("Value").unwrap_or_default();
    if value == STATUS_SUCCESS {
        return Ok(());
    }
    // The top-level code with its second-level one, e.g. Responder/AuthnFailed.
    let mut described = value.rsplit(':').next().unwrap_or_default().to_owned();
    if let Some(inner) = children_named(code, NS_SAMLP, "StatusCode").next()
        && let Some(inner_value) = inner.attribute("Value")
    {
        described.push('/');
        described.push_str(inner_value.rsplit(':').next().unwrap_or_default());
    }
    Err(SamlError::Status(described.chars().take(80).collect()))
}

/// An Issuer must be the IdP's entity ID (with the entity format, if any).
pub(crate) fn check_issuer(issuer: Node<'_, '_>, idp: &IdpConfig) -> Result<(), SamlError> {
    if issuer
        .attribute("Format")
        .is_some_and(|format| format != "urn:oasis:names:tc:SAML:2.0:nameid-format:entity")
    {
        return Err(SamlError::Issuer);
    }
    if child_elements(issuer).next().is_some() || trimmed_text(issuer, "Issuer")? != idp.entity_id {
        return Err(SamlError::Issuer);
    }
    Ok(())
}
