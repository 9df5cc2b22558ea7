use karen_docs::DocumentParser;
use karen_domain::documents::{DocumentExtractor, DocumentFormat};

use crate::{extract, heading, paragraph, refusal};

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Karen &amp; Friends &mdash; Docs</title>
  <style>body { color: red }</style>
  <script>var secret = "not text";</script>
</head>
<body>
  <nav><a href="/">Home</a> <a href="/docs">Docs</a></nav>
  <noscript>Enable JavaScript</noscript>
  <template><p>template content</p></template>
  <h1>Getting <em>started</em></h1>
  <p>Karen answers questions&nbsp;about your documents. Caf&eacute; &#8212; d&#xE9;j&agrave; vu.</p>
  <div>Loose text in a div<br>with a line break.</div>
  <ul>
    <li>First item</li>
    <li>Second <b>bold</b> item
      <ul><li>Nested item</li></ul>
    </li>
  </ul>
  <h2>Configuration</h2>
  <pre>karen serve
  --port 8080</pre>
  <blockquote><p>Quoted wisdom.</p></blockquote>
  <table>
    <tr><th>Option</th><th>Default</th></tr>
    <tr><td>port</td><td><p>8080</p></td></tr>
  </table>
  <h6>Deep heading</h6>
  <p>Unclosed paragraph
  <p>Another one
  <footer>Footer text</footer>
</body>
</html>"#;

#[test]
fn headings_paragraphs_lists_tables_and_title_are_found() {
    let document = extract(DocumentFormat::Html, PAGE.as_bytes());
    assert_eq!(document.title.as_deref(), Some("Karen & Friends — Docs"));
    assert_eq!(
        document.blocks,
        vec![
            heading(1, "Getting started"),
            paragraph("Karen answers questions about your documents. Café — déjà vu."),
            paragraph("Loose text in a div with a line break."),
            paragraph("First item"),
            paragraph("Second bold item"),
            paragraph("Nested item"),
            heading(2, "Configuration"),
            paragraph("karen serve --port 8080"),
            paragraph("Quoted wisdom."),
            paragraph("Option | Default"),
            paragraph("port | 8080"),
            heading(6, "Deep heading"),
            paragraph("Unclosed paragraph"),
            paragraph("Another one"),
            paragraph("Footer text"),
        ]
    );
}

#[test]
fn the_first_h1_is_the_title_when_there_is_no_title_element() {
    let page = b"<svg><title>A chart</title></svg><h1>Release notes</h1><p>Fixed.</p>";
    let document = extract(DocumentFormat::Html, page);
    assert_eq!(document.title.as_deref(), Some("Release notes"));
}

#[test]
fn a_declared_legacy_charset_is_decoded() {
    let bytes = b"<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"></head><body><p>Caf\xE9 cr\xE8me</p></body></html>";
    let document = extract(DocumentFormat::Html, bytes);
    assert_eq!(document.blocks, vec![paragraph("Café crème")]);
}

#[test]
fn deeply_nested_markup_does_not_overflow_the_stack() {
    let depth = 5_000;
    let page = format!(
        "{}deep text{}",
        "<span>".repeat(depth),
        "</span>".repeat(depth)
    );
    let document = extract(DocumentFormat::Html, page.as_bytes());
    assert_eq!(document.blocks, vec![paragraph("deep text")]);
}

#[test]
fn hostile_nesting_is_refused_before_parsing() {
    // html5ever walks the open elements for each <div>: this would parse for minutes.
    let depth = 50_000;
    let page = format!("{}x{}", "<div>".repeat(depth), "</div>".repeat(depth));
    let message = refusal(DocumentParser::new().extract(DocumentFormat::Html, page.as_bytes()));
    assert!(
        message.contains("HTML file nests its elements too deeply"),
        "{message}"
    );
    // Unclosed paragraphs and list items are closed by the parser: no depth, no refusal.
    let page = "<p>paragraph <li>item ".repeat(depth);
    let document = extract(DocumentFormat::Html, page.as_bytes());
    assert_eq!(document.blocks.len(), 2 * depth);
}

#[test]
fn pages_without_visible_text_are_refused() {
    let page = b"<html><head><title>Only a title</title><script>alert(1)</script></head><body> <nav>menu</nav> </body></html>";
    let message = refusal(DocumentParser::new().extract(DocumentFormat::Html, page));
    assert_eq!(message, "the file contains no text");
}
