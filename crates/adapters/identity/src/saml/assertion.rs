//! Reading and checking the signed `saml:Assertion` (Web Browser SSO profile).
//!
//! Called only with the assertion node whose signature (or whose Response's
//! signature) was verified: everything here is read from that very node.

use std::collections::BTreeMap;

use roxmltree::Node;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::config::{IdpConfig, NAMEID_FORMAT_UNSPECIFIED};
use super::error::SamlError;
use super::response::{Expectations, VerifiedAssertion, check_issuer};
use super::xml::{
    NS_SAML, child_elements, children_named, is, required_child, text_content, trimmed_text,
};

const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

pub(crate) fn read_assertion(
    assertion: Node<'_, '_>,
    idp: &IdpConfig,
    expect: &Expectations,
) -> Result<VerifiedAssertion, SamlError> {
    if assertion.attribute("Version") != Some("2.0") {
        return Err(SamlError::Version);
    }
    let assertion_id = assertion
        .attribute("ID")
        .filter(|id| !id.is_empty())
        .ok_or(SamlError::Missing {
            what: "Assertion ID",
        })?;
    let issued = instant(
        assertion.attribute("IssueInstant"),
        "Assertion IssueInstant",
    )?;
    let (earliest, latest) = expect.window()?;
    if issued > latest {
        return Err(SamlError::NotYetValid);
    }
    check_issuer(
        required_child(assertion, NS_SAML, "Issuer", "Assertion Issuer")?,
        idp,
    )?;

    // Subject: a plain NameID and a valid bearer confirmation.
    let subject = required_child(assertion, NS_SAML, "Subject", "Subject")?;
    if children_named(subject, NS_SAML, "EncryptedID")
        .next()
        .is_some()
        || children_named(subject, NS_SAML, "BaseID").next().is_some()
    {
        return Err(SamlError::Unsupported {
            what: "an encrypted or base subject identifier",
        });
    }
    let name_id_node = required_child(subject, NS_SAML, "NameID", "NameID")?;
    let name_id = trimmed_text(name_id_node, "NameID")?;
    let name_id_format = name_id_node
        .attribute("Format")
        .unwrap_or(NAMEID_FORMAT_UNSPECIFIED)
        .to_owned();
    let confirmed_until = bearer_confirmation(subject, expect, earliest, latest)?;

    // Conditions: validity window and audience.
    let conditions = required_child(assertion, NS_SAML, "Conditions", "Conditions")?;
    let not_before = optional_instant(conditions.attribute("NotBefore"), "NotBefore")?;
    if not_before.is_some_and(|not_before| not_before > latest) {
        return Err(SamlError::NotYetValid);
    }
    let conditions_until = optional_instant(conditions.attribute("NotOnOrAfter"), "NotOnOrAfter")?;
    if conditions_until.is_some_and(|until| until <= earliest) {
        return Err(SamlError::Expired);
    }
    check_audience(conditions, expect)?;

    // Authentication: at least one AuthnStatement, its session still valid.
    let mut session_index = None;
    let mut authn_statements = children_named(assertion, NS_SAML, "AuthnStatement").peekable();
    if authn_statements.peek().is_none() {
        return Err(SamlError::Missing {
            what: "AuthnStatement",
        });
    }
    for (position, statement) in authn_statements.enumerate() {
        let session_until = optional_instant(
            statement.attribute("SessionNotOnOrAfter"),
            "SessionNotOnOrAfter",
        )?;
        if session_until.is_some_and(|until| until <= earliest) {
            return Err(SamlError::Expired);
        }
        if position == 0 {
            session_index = statement.attribute("SessionIndex").map(str::to_owned);
        }
    }

    let attributes = read_attributes(assertion)?;
    let not_on_or_after = match conditions_until {
        Some(until) => until.min(confirmed_until),
        None => confirmed_until,
    };
    Ok(VerifiedAssertion {
        assertion_id: assertion_id.to_owned(),
        issuer: idp.entity_id.clone(),
        name_id,
        name_id_format,
        session_index,
        attributes,
        not_on_or_after,
    })
}

/// Finds a bearer SubjectConfirmation that holds and returns its NotOnOrAfter.
/// When none holds, the first one's refusal is returned.
fn bearer_confirmation(
    subject: Node<'_, '_>,
    expect: &Expectations,
    earliest: OffsetDateTime,
    latest: OffsetDateTime,
) -> Result<OffsetDateTime, SamlError> {
    let mut first_error = None;
    for confirmation in children_named(subject, NS_SAML, "SubjectConfirmation") {
        if confirmation.attribute("Method") != Some(BEARER) {
            continue;
        }
        match check_bearer(confirmation, expect, earliest, latest) {
            Ok(until) => return Ok(until),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.unwrap_or(SamlError::NoBearerConfirmation))
}

fn check_bearer(
    confirmation: Node<'_, '_>,
    expect: &Expectations,
    earliest: OffsetDateTime,
    latest: OffsetDateTime,
) -> Result<OffsetDateTime, SamlError> {
    let data = required_child(
        confirmation,
        NS_SAML,
        "SubjectConfirmationData",
        "SubjectConfirmationData",
    )?;
    if data.attribute("Recipient") != Some(expect.acs_url.as_str()) {
        return Err(SamlError::Recipient);
    }
    if data.attribute("InResponseTo") != expect.in_response_to.as_deref() {
        return Err(SamlError::InResponseTo);
    }
    let not_before = optional_instant(data.attribute("NotBefore"), "NotBefore")?;
    if not_before.is_some_and(|not_before| not_before > latest) {
        return Err(SamlError::NotYetValid);
    }
    let until = instant(
        data.attribute("NotOnOrAfter"),
        "SubjectConfirmationData NotOnOrAfter",
    )?;
    if until <= earliest {
        return Err(SamlError::Expired);
    }
    Ok(until)
}

/// Every AudienceRestriction must list our entity ID, and there must be one.
fn check_audience(conditions: Node<'_, '_>, expect: &Expectations) -> Result<(), SamlError> {
    let mut restrictions = children_named(conditions, NS_SAML, "AudienceRestriction").peekable();
    if restrictions.peek().is_none() {
        return Err(SamlError::Audience);
    }
    for restriction in restrictions {
        let mut listed = false;
        for audience in children_named(restriction, NS_SAML, "Audience") {
            if trimmed_text(audience, "Audience")? == expect.sp_entity_id {
                listed = true;
            }
        }
        if !listed {
            return Err(SamlError::Audience);
        }
    }
    Ok(())
}

fn read_attributes(assertion: Node<'_, '_>) -> Result<BTreeMap<String, Vec<String>>, SamlError> {
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for statement in children_named(assertion, NS_SAML, "AttributeStatement") {
        for child in child_elements(statement) {
            if is(child, NS_SAML, "EncryptedAttribute") {
                return Err(SamlError::Unsupported {
                    what: "an encrypted attribute",
                });
            }
            if !is(child, NS_SAML, "Attribute") {
                continue;
            }
            let name = child
                .attribute("Name")
                .filter(|name| !name.is_empty())
                .ok_or(SamlError::Missing {
                    what: "Attribute Name",
                })?;
            let values = attributes.entry(name.to_owned()).or_default();
            for value in children_named(child, NS_SAML, "AttributeValue") {
                // Structured values (e.g. a NameID inside eduPersonTargetedID)
                // are not text: left out rather than flattened.
                if child_elements(value).next().is_some() {
                    continue;
                }
                values.push(text_content(value, "AttributeValue")?);
            }
        }
    }
    Ok(attributes)
}

fn instant(text: Option<&str>, what: &'static str) -> Result<OffsetDateTime, SamlError> {
    optional_instant(text, what)?.ok_or(SamlError::Missing { what })
}

fn optional_instant(
    text: Option<&str>,
    what: &'static str,
) -> Result<Option<OffsetDateTime>, SamlError> {
    text.map(|text| OffsetDateTime::parse(text, &Rfc3339).map_err(|_| SamlError::Invalid { what }))
        .transpose()
}
