//! SAML 2.0 metadata: reading an identity provider's, writing ours.
//!
//! Metadata signatures are not checked: metadata is trusted because an
//! administrator uploaded it (or it was fetched over HTTPS from a URL they
//! chose), the same trust that picks the IdP at all.

use roxmltree::Node;

use super::config::{BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, IdpConfig, SpConfig};
use super::dsig::public_key;
use super::error::SamlError;
use super::xml::{
    NS_DS, NS_MD, children_named, decode_base64, escape, is, parse_untrusted, trimmed_text,
};

const PROTOCOL_SAML2: &str = "urn:oasis:names:tc:SAML:2.0:protocol";

/// Reads an IdP's metadata: its entityID, SingleSignOnService locations
/// (HTTP-Redirect and HTTP-POST) and signing certificates (KeyDescriptor
/// `use="signing"` or without `use`).
///
/// The root is an `md:EntityDescriptor`, or an `md:EntitiesDescriptor` holding
/// exactly one entity with an IDPSSODescriptor.
pub fn parse_idp_metadata(xml: &str) -> Result<IdpConfig, SamlError> {
    let document = parse_untrusted(xml)?;
    let root = document.root_element();
    let entity = if is(root, NS_MD, "EntityDescriptor") {
        root
    } else if is(root, NS_MD, "EntitiesDescriptor") {
        let mut idps = root
            .descendants()
            .filter(|node| is(*node, NS_MD, "EntityDescriptor"))
            .filter(|node| {
                children_named(*node, NS_MD, "IDPSSODescriptor")
                    .next()
                    .is_some()
            });
        let first = idps.next().ok_or(SamlError::Missing {
            what: "IDPSSODescriptor",
        })?;
        if idps.next().is_some() {
            return Err(SamlError::Duplicate {
                what: "identity provider in the metadata",
            });
        }
        first
    } else {
        return Err(SamlError::UnexpectedRoot {
            expected: "SAML metadata EntityDescriptor",
        });
    };
    let entity_id = entity
        .attribute("entityID")
        .filter(|id| !id.trim().is_empty())
        .ok_or(SamlError::Missing { what: "entityID" })?;

    let mut descriptors = children_named(entity, NS_MD, "IDPSSODescriptor").filter(|d| {
        d.attribute("protocolSupportEnumeration")
            .is_some_and(|list| list.split_ascii_whitespace().any(|p| p == PROTOCOL_SAML2))
    });
    let descriptor = descriptors.next().ok_or(SamlError::Missing {
        what: "SAML 2.0 IDPSSODescriptor",
    })?;
    if descriptors.next().is_some() {
        return Err(SamlError::Duplicate {
            what: "IDPSSODescriptor",
        });
    }

    let mut sso_redirect_url = None;
    let mut sso_post_url = None;
    for service in children_named(descriptor, NS_MD, "SingleSignOnService") {
        let location = service.attribute("Location").map(str::to_owned);
        match service.attribute("Binding") {
            Some(BINDING_HTTP_REDIRECT) if sso_redirect_url.is_none() => {
                sso_redirect_url = location;
            }
            Some(BINDING_HTTP_POST) if sso_post_url.is_none() => sso_post_url = location,
            _ => {}
        }
    }

    let mut signing_certificates = Vec::new();
    for key_descriptor in children_named(descriptor, NS_MD, "KeyDescriptor") {
        if !matches!(key_descriptor.attribute("use"), None | Some("signing")) {
            continue;
        }
        for certificate in certificates_in(key_descriptor) {
            let der = decode_base64(&trimmed_text(certificate, "X509Certificate")?)?;
            public_key(&der)?;
            if !signing_certificates.contains(&der) {
                signing_certificates.push(der);
            }
        }
    }

    let config = IdpConfig {
        entity_id: entity_id.to_owned(),
        sso_redirect_url,
        sso_post_url,
        signing_certificates,
    };
    config.validate()?;
    Ok(config)
}

/// `ds:KeyInfo/ds:X509Data/ds:X509Certificate` under a KeyDescriptor.
fn certificates_in<'a, 'input>(
    key_descriptor: Node<'a, 'input>,
) -> impl Iterator<Item = Node<'a, 'input>> {
    children_named(key_descriptor, NS_DS, "KeyInfo")
        .flat_map(|info| children_named(info, NS_DS, "X509Data"))
        .flat_map(|data| children_named(data, NS_DS, "X509Certificate"))
}

/// Our metadata, for the IdP administrator: an SPSSODescriptor that wants
/// signed assertions, does not sign its requests, and receives responses by
/// HTTP-POST at the ACS URL.
#[must_use]
pub fn sp_metadata(sp: &SpConfig) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            "\n",
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity}">"#,
            r#"<md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" "#,
            r#"protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">"#,
            r#"<md:NameIDFormat>{format}</md:NameIDFormat>"#,
            r#"<md:AssertionConsumerService Binding="{binding}" Location="{acs}" index="0" isDefault="true"/>"#,
            r#"</md:SPSSODescriptor></md:EntityDescriptor>"#,
            "\n"
        ),
        entity = escape(&sp.entity_id),
        format = escape(&sp.name_id_format),
        binding = BINDING_HTTP_POST,
        acs = escape(&sp.acs_url),
    )
}
