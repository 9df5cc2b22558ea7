//! Hardened XML parsing and small helpers shared by the SAML modules.
//!
//! Every document from outside goes through [`parse_untrusted`]: no DTD (so no
//! entity expansion, no external entities), no processing instructions, a
//! size, node-count and depth limit.

use roxmltree::{Document, Node, ParsingOptions};

use super::error::SamlError;

pub(crate) const NS_SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub(crate) const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub(crate) const NS_MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub(crate) const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub(crate) const NS_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub(crate) const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// Largest XML document accepted (a SAML response is a few KiB; metadata of
/// one entity tens of KiB).
pub const MAX_XML_BYTES: usize = 512 * 1024;
/// Deepest element nesting accepted (SAML responses are under 10 deep).
pub(crate) const MAX_DEPTH: usize = 48;
/// Most nodes accepted in one document.
const MAX_NODES: u32 = 20_000;

/// Parses a document from an untrusted source.
pub(crate) fn parse_untrusted(text: &str) -> Result<Document<'_>, SamlError> {
    if text.len() > MAX_XML_BYTES {
        return Err(SamlError::TooLarge {
            limit: MAX_XML_BYTES,
        });
    }
    // The parser refuses DTDs too; this names the refusal whatever its wording.
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
        return Err(SamlError::DtdForbidden);
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        entity_resolver: None,
    };
    let document = Document::parse_with_options(text, options).map_err(|error| match error {
        roxmltree::Error::DtdDetected => SamlError::DtdForbidden,
        other => SamlError::Xml(other.to_string()),
    })?;
    for node in document.descendants() {
        if node.is_pi() {
            return Err(SamlError::ProcessingInstructionForbidden);
        }
        if node.is_element() && node.ancestors().count() > MAX_DEPTH {
            return Err(SamlError::TooDeep { limit: MAX_DEPTH });
        }
    }
    Ok(document)
}

/// Whether `node` is the element `{namespace}local`.
pub(crate) fn is(node: Node<'_, '_>, namespace: &str, local: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == local
        && node.tag_name().namespace() == Some(namespace)
}

/// The element children of `node`.
pub(crate) fn child_elements<'a, 'input>(
    node: Node<'a, 'input>,
) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children().filter(Node::is_element)
}

/// The children of `node` named `{namespace}local`.
pub(crate) fn children_named<'a, 'input>(
    node: Node<'a, 'input>,
    namespace: &'static str,
    local: &'static str,
) -> impl Iterator<Item = Node<'a, 'input>> {
    child_elements(node).filter(move |child| is(*child, namespace, local))
}

/// The only child of `node` named `{namespace}local`, if any; two is an error.
pub(crate) fn optional_child<'a, 'input>(
    node: Node<'a, 'input>,
    namespace: &'static str,
    local: &'static str,
    what: &'static str,
) -> Result<Option<Node<'a, 'input>>, SamlError> {
    let mut found = children_named(node, namespace, local);
    let first = found.next();
    if found.next().is_some() {
        return Err(SamlError::Duplicate { what });
    }
    Ok(first)
}

/// The one child of `node` named `{namespace}local`.
pub(crate) fn required_child<'a, 'input>(
    node: Node<'a, 'input>,
    namespace: &'static str,
    local: &'static str,
    what: &'static str,
) -> Result<Node<'a, 'input>, SamlError> {
    optional_child(node, namespace, local, what)?.ok_or(SamlError::Missing { what })
}

/// The text of a simple-content element: all its text children joined.
///
/// Comments are skipped, so `a<!---->b` reads `ab`: exactly the text that
/// exclusive canonicalization (without comments) signs, never the first piece.
/// Child elements are refused.
pub(crate) fn text_content(node: Node<'_, '_>, what: &'static str) -> Result<String, SamlError> {
    let mut text = String::new();
    for child in node.children() {
        if child.is_element() {
            return Err(SamlError::Invalid { what });
        }
        if child.is_text() {
            text.push_str(child.text().unwrap_or_default());
        }
    }
    Ok(text)
}

/// [`text_content`] with surrounding XML whitespace trimmed; empty is refused.
pub(crate) fn trimmed_text(node: Node<'_, '_>, what: &'static str) -> Result<String, SamlError> {
    let text = text_content(node, what)?;
    let trimmed = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    if trimmed.is_empty() {
        return Err(SamlError::Missing { what });
    }
    Ok(trimmed.to_owned())
}

/// Base64 with XML whitespace (line breaks) allowed anywhere.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, SamlError> {
    use base64::Engine as _;
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\r'))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| SamlError::Base64)
}

/// Escapes text for element content or a double-quoted attribute value.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}
