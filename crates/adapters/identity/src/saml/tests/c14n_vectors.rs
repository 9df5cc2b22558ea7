//! Exclusive C14N against the specification's examples and the rules the
//! verifier depends on.

use roxmltree::Document;

use crate::saml::c14n::canonicalize;

fn c14n_of(xml: &str, local_name: &str, prefixes: &[&str]) -> String {
    let document = Document::parse(xml).unwrap();
    let node = document
        .descendants()
        .find(|node| node.is_element() && node.tag_name().name() == local_name)
        .unwrap();
    let prefixes: Vec<String> = prefixes.iter().map(|p| (*p).to_owned()).collect();
    String::from_utf8(canonicalize(node, None, &prefixes).unwrap()).unwrap()
}

#[test]
fn the_exclusive_c14n_specification_example() {
    // Exc-C14N 1.0, section 2.2: the n0 and n2 contexts do not leak in.
    let in_n0 = "<n0:local xmlns:n0=\"foo:bar\" xmlns:n3=\"ftp://example.org\"><n1:elem2 xmlns:n1=\"http://example.net\" xml:lang=\"en\">\n    <n3:stuff xmlns:n3=\"ftp://example.org\"/>\n  </n1:elem2></n0:local>";
    let in_n2 = "<n2:pdu xmlns:n1=\"http://example.com\" xmlns:n2=\"http://foo.example\" xml:lang=\"fr\" xml:space=\"retain\"><n1:elem2 xmlns:n1=\"http://example.net\" xml:lang=\"en\">\n    <n3:stuff xmlns:n3=\"ftp://example.org\"/>\n  </n1:elem2></n2:pdu>";
    let expected = "<n1:elem2 xmlns:n1=\"http://example.net\" xml:lang=\"en\">\n    <n3:stuff xmlns:n3=\"ftp://example.org\"></n3:stuff>\n  </n1:elem2>";
    assert_eq!(c14n_of(in_n0, "elem2", &[]), expected);
    assert_eq!(c14n_of(in_n2, "elem2", &[]), expected);
}

#[test]
fn namespaces_and_attributes_are_sorted_and_unused_ones_dropped() {
    let xml = r#"<a xmlns="urn:d" xmlns:b="urn:b" xmlns:c="urn:c" z="1" b:y="2" a="3"/>"#;
    assert_eq!(
        c14n_of(xml, "a", &[]),
        r#"<a xmlns="urn:d" xmlns:b="urn:b" a="3" z="1" b:y="2"></a>"#
    );
}

#[test]
fn text_and_attribute_values_are_escaped() {
    let xml = "<a attr=\"&quot;&lt;&gt;&#9;&#10;&#13;&amp;'\">x &amp; &lt; &gt; &#13; \" '<![CDATA[<y>&]]></a>";
    assert_eq!(
        c14n_of(xml, "a", &[]),
        "<a attr=\"&quot;&lt;>&#x9;&#xA;&#xD;&amp;'\">x &amp; &lt; &gt; &#xD; \" '&lt;y&gt;&amp;</a>"
    );
}

#[test]
fn comments_are_dropped_and_text_around_them_joined() {
    let xml = "<a><b>admin@evil.test<!---->.attacker.test</b><!-- note --></a>";
    assert_eq!(
        c14n_of(xml, "a", &[]),
        "<a><b>admin@evil.test.attacker.test</b></a>"
    );
}

#[test]
fn the_default_namespace_is_undeclared_only_when_an_output_ancestor_declared_one() {
    let xml = r#"<a xmlns="urn:d"><b xmlns=""><c/></b></a>"#;
    assert_eq!(
        c14n_of(xml, "a", &[]),
        r#"<a xmlns="urn:d"><b xmlns=""><c></c></b></a>"#
    );
    assert_eq!(c14n_of(xml, "b", &[]), "<b><c></c></b>");
}

#[test]
fn a_namespace_is_declared_again_below_an_element_that_did_not_use_it() {
    let xml = r#"<p:a xmlns:p="urn:p" xmlns:q="urn:q"><b><q:c/></b><q:d/></p:a>"#;
    assert_eq!(
        c14n_of(xml, "a", &[]),
        r#"<p:a xmlns:p="urn:p"><b><q:c xmlns:q="urn:q"></q:c></b><q:d xmlns:q="urn:q"></q:d></p:a>"#
    );
}

#[test]
fn inclusive_namespaces_prefix_list_renders_listed_prefixes() {
    let xml = r#"<r xmlns:xs="urn:xs" xmlns:p="urn:p" xmlns="urn:d"><p:e><f/></p:e></r>"#;
    assert_eq!(
        c14n_of(xml, "e", &["xs", "#default"]),
        r#"<p:e xmlns="urn:d" xmlns:p="urn:p" xmlns:xs="urn:xs"><f></f></p:e>"#
    );
    assert_eq!(
        c14n_of(xml, "e", &[]),
        r#"<p:e xmlns:p="urn:p"><f xmlns="urn:d"></f></p:e>"#
    );
}

#[test]
fn an_excluded_descendant_is_left_out_entirely() {
    let xml =
        r#"<a ID="x"><i>1</i><s:Signature xmlns:s="urn:s"><s:v>sig</s:v></s:Signature><j/></a>"#;
    let document = Document::parse(xml).unwrap();
    let apex = document.root_element();
    let excluded = apex
        .descendants()
        .find(|node| node.tag_name().name() == "Signature")
        .unwrap();
    let bytes = canonicalize(apex, Some(excluded.id()), &[]).unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        r#"<a ID="x"><i>1</i><j></j></a>"#
    );
}

#[test]
fn whitespace_inside_tags_does_not_matter_but_line_endings_are_normalized() {
    let spaced = "<a\n  b = 'v'\t></a >";
    assert_eq!(c14n_of(spaced, "a", &[]), r#"<a b="v"></a>"#);
    let crlf = "<a>x\r\ny</a>";
    assert_eq!(c14n_of(crlf, "a", &[]), "<a>x\ny</a>");
}

#[test]
fn a_redeclared_prefix_uses_the_innermost_binding() {
    let xml = r#"<a xmlns:p="urn:1"><p:b xmlns:p="urn:2" p:x="1"/></a>"#;
    assert_eq!(
        c14n_of(xml, "b", &[]),
        r#"<p:b xmlns:p="urn:2" p:x="1"></p:b>"#
    );
}
