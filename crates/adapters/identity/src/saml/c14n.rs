//! Exclusive XML Canonicalization 1.0, without comments
//! (<http://www.w3.org/2001/10/xml-exc-c14n#>), of one element subtree,
//! optionally leaving out one descendant (the enveloped signature).
//!
//! Only what SAML signatures need: the apex is an element, the document has no
//! DTD and no processing instructions (refused at parse time), and the output
//! is a function of what the rest of this crate reads, so a document that
//! canonicalizes to signed bytes says what those bytes say:
//! - elements and attributes keep the prefix written in the source, checked to
//!   resolve to the namespace the parser resolved;
//! - text is all the text children (comments dropped), so `a<!---->b` is `ab`
//!   here and in [`super::xml::text_content`] alike.

use std::collections::BTreeMap;

use roxmltree::{Node, NodeId};

use super::error::SamlError;
use super::xml::{MAX_DEPTH, NS_XML};

/// Algorithm URI of exclusive canonicalization without comments.
pub(crate) const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

/// Canonicalizes the subtree at `apex`, leaving out the element `exclude`
/// (and its subtree) if it is inside it.
///
/// `inclusive_prefixes` is the InclusiveNamespaces PrefixList (`#default` for
/// the default namespace): those namespaces are rendered like inclusive C14N.
pub(crate) fn canonicalize(
    apex: Node<'_, '_>,
    exclude: Option<NodeId>,
    inclusive_prefixes: &[String],
) -> Result<Vec<u8>, SamlError> {
    if !apex.is_element() {
        return Err(SamlError::Invalid {
            what: "canonicalization apex",
        });
    }
    let mut out = String::new();
    let mut rendered = BTreeMap::new();
    // The empty default namespace is in force before anything is rendered.
    rendered.insert(String::new(), String::new());
    let canonicalizer = Canonicalizer {
        source: apex.document().input_text(),
        exclude,
        inclusive_prefixes,
    };
    canonicalizer.element(apex, &rendered, &mut out, 0)?;
    Ok(out.into_bytes())
}

struct Canonicalizer<'s> {
    source: &'s str,
    exclude: Option<NodeId>,
    inclusive_prefixes: &'s [String],
}

impl Canonicalizer<'_> {
    fn element(
        &self,
        node: Node<'_, '_>,
        rendered_by_ancestors: &BTreeMap<String, String>,
        out: &mut String,
        depth: usize,
    ) -> Result<(), SamlError> {
        if depth > MAX_DEPTH {
            return Err(SamlError::TooDeep { limit: MAX_DEPTH });
        }
        let in_scope = in_scope_namespaces(node);
        let element_qname = element_qname(self.source, node)?;
        let element_prefix = prefix_of(element_qname);
        check_prefix(&in_scope, element_prefix, node.tag_name().namespace(), true)?;

        // Namespaces visibly utilized: the element's own, and its prefixed
        // attributes' (an unprefixed attribute is in no namespace).
        let mut utilized: Vec<&str> = vec![element_prefix];
        let mut attributes = Vec::new();
        for attribute in node.attributes() {
            let qname = self
                .source
                .get(attribute.range_qname())
                .ok_or(SamlError::Invalid {
                    what: "attribute name",
                })?;
            // (roxmltree caps the recorded qname length: check it is whole.)
            if qname.rsplit(':').next() != Some(attribute.name()) {
                return Err(SamlError::Invalid {
                    what: "attribute name",
                });
            }
            let prefix = prefix_of(qname);
            check_prefix(&in_scope, prefix, attribute.namespace(), false)?;
            if !prefix.is_empty() && prefix != "xml" {
                utilized.push(prefix);
            }
            attributes.push((
                attribute.namespace().unwrap_or_default(),
                attribute.name(),
                qname,
                attribute.value(),
            ));
        }
        for listed in self.inclusive_prefixes {
            let prefix = if listed == "#default" {
                ""
            } else {
                listed.as_str()
            };
            if prefix.is_empty() || in_scope.contains_key(prefix) {
                utilized.push(prefix);
            }
        }

        let mut rendered = rendered_by_ancestors.clone();
        let mut declarations = BTreeMap::new();
        for prefix in utilized {
            if prefix == "xml" {
                continue;
            }
            let uri = in_scope.get(prefix).map(String::as_str).unwrap_or_default();
            if rendered.get(prefix).map(String::as_str) != Some(uri) {
                rendered.insert(prefix.to_owned(), uri.to_owned());
                declarations.insert(prefix.to_owned(), uri.to_owned());
            }
        }

        out.push('<');
        out.push_str(element_qname);
        // BTreeMap order: the default namespace ("") first, then by prefix.
        for (prefix, uri) in &declarations {
            if prefix.is_empty() {
                out.push_str(" xmlns=\"");
            } else {
                out.push_str(" xmlns:");
                out.push_str(prefix);
                out.push_str("=\"");
            }
            escape_attribute(uri, out);
            out.push('"');
        }
        // Attributes by namespace URI, then local name; no namespace first.
        attributes.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for pair in attributes.windows(2) {
            if let [a, b] = pair
                && (a.0, a.1) == (b.0, b.1)
            {
                return Err(SamlError::Invalid {
                    what: "duplicate attribute",
                });
            }
        }
        for (_, _, qname, value) in &attributes {
            out.push(' ');
            out.push_str(qname);
            out.push_str("=\"");
            escape_attribute(value, out);
            out.push('"');
        }
        out.push('>');
        for child in node.children() {
            if child.is_element() {
                if Some(child.id()) != self.exclude {
                    self.element(child, &rendered, out, depth + 1)?;
                }
            } else if child.is_text() {
                escape_text(child.text().unwrap_or_default(), out);
            } else if child.is_pi() {
                return Err(SamlError::ProcessingInstructionForbidden);
            }
            // Comments are not part of the canonical form.
        }
        out.push_str("</");
        out.push_str(element_qname);
        out.push('>');
        Ok(())
    }
}

/// Prefix -> URI of every namespace in scope at `node` ("" is the default).
fn in_scope_namespaces(node: Node<'_, '_>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for namespace in node.namespaces() {
        let prefix = namespace.name().unwrap_or_default();
        if prefix == "xml" {
            continue;
        }
        map.insert(prefix.to_owned(), namespace.uri().to_owned());
    }
    // An empty default namespace (xmlns="") means none.
    if map.get("").is_some_and(String::is_empty) {
        map.remove("");
    }
    map
}

/// The element's qualified name as written: `<prefix:local` or `<local`.
fn element_qname<'s>(source: &'s str, node: Node<'_, '_>) -> Result<&'s str, SamlError> {
    let start = node.range().start;
    let tail = source
        .get(start..)
        .and_then(|tail| tail.strip_prefix('<'))
        .ok_or(SamlError::Invalid {
            what: "element position",
        })?;
    let end = tail
        .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
        .unwrap_or(tail.len());
    let qname = &tail[..end];
    let local = qname.rsplit(':').next().unwrap_or_default();
    if local != node.tag_name().name() {
        return Err(SamlError::Invalid {
            what: "element name",
        });
    }
    Ok(qname)
}

fn prefix_of(qname: &str) -> &str {
    qname
        .split_once(':')
        .map(|(prefix, _)| prefix)
        .unwrap_or_default()
}

/// The written prefix must resolve to the namespace the parser resolved.
fn check_prefix(
    in_scope: &BTreeMap<String, String>,
    prefix: &str,
    resolved: Option<&str>,
    is_element: bool,
) -> Result<(), SamlError> {
    // After xmlns="" the parser reports the empty namespace: that is none.
    let resolved = resolved.filter(|uri| !uri.is_empty());
    let expected = if prefix == "xml" {
        Some(NS_XML)
    } else if prefix.is_empty() && !is_element {
        None
    } else {
        in_scope.get(prefix).map(String::as_str)
    };
    if expected == resolved {
        Ok(())
    } else {
        Err(SamlError::Invalid {
            what: "namespace prefix",
        })
    }
}

fn escape_text(text: &str, out: &mut String) {
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            other => out.push(other),
        }
    }
}

fn escape_attribute(text: &str, out: &mut String) {
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            other => out.push(other),
        }
    }
}
