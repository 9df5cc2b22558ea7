//! HTML, parsed with html5ever (through scraper) as a browser would: broken
//! markup is repaired and character references are decoded.

use std::borrow::Cow;

use ego_tree::iter::Edge;
use karen_domain::Result;
use karen_domain::documents::{BlockKind, DocumentFormat, ExtractedDocument};
use scraper::{Html, Node};

use crate::{BlockCollector, ExtractionLimits, normalize_whitespace, refuse, refuse_binary};

/// Elements whose content is not part of the page's text: code, styling,
/// navigation and things a reader never sees as prose.
const SKIPPED: &[&str] = &[
    "script", "style", "nav", "noscript", "template", "head", "svg", "math", "iframe", "object",
    "canvas", "select", "button",
];

const HTML_NAMESPACE: &str = "http://www.w3.org/1999/xhtml";

/// Elements that end the running text before and after them.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "caption",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "header",
    "hgroup",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "ul",
];

/// Reads an HTML page: h1–h6 become headings; paragraphs, list items,
/// preformatted text, quotes, table rows and other blocks become paragraphs.
/// The title is the `<title>`, else the first `<h1>`.
pub(crate) fn extract(bytes: &[u8], limits: &ExtractionLimits) -> Result<ExtractedDocument> {
    let source = decode(bytes)?;
    refuse_binary(&source, DocumentFormat::Html)?;
    if nesting_work(&source) > limits.max_html_nesting_work {
        return Err(refuse(
            "the HTML file nests its elements too deeply to be read in reasonable time; simplify its markup or split it",
        ));
    }
    let page = Html::parse_document(&source);
    let mut walker = Walker {
        blocks: BlockCollector::new(DocumentFormat::Html, limits),
        title: None,
        first_h1: None,
        text: String::new(),
        skipped_depth: 0,
        heading_depth: 0,
        cell_depth: 0,
        title_depth: 0,
        row_cells: Vec::new(),
    };
    // The traversal is iterative: a page of deeply nested elements cannot overflow the stack.
    for edge in page.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Text(content) => walker.text(content),
                Node::Element(element) => {
                    let is_html = &*element.name.ns == HTML_NAMESPACE;
                    walker.open(element.name(), is_html)?;
                }
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(element) = node.value() {
                    walker.close(element.name())?;
                }
            }
        }
    }
    walker.end_block()?;
    let title = walker.title.filter(|title| !title.trim().is_empty());
    Ok(walker.blocks.finish(title.or(walker.first_h1)))
}

/// The state of a walk through the page's tree, in document order.
struct Walker {
    blocks: BlockCollector,
    title: Option<String>,
    first_h1: Option<String>,
    /// The running text of the block being read.
    text: String,
    // Nesting depths rather than flags: malformed pages nest these in each other.
    skipped_depth: usize,
    heading_depth: usize,
    cell_depth: usize,
    title_depth: usize,
    row_cells: Vec<String>,
}

impl Walker {
    fn text(&mut self, content: &str) {
        if self.title_depth > 0 {
            self.title.get_or_insert_with(String::new).push_str(content);
        } else if self.skipped_depth == 0 {
            self.text.push_str(content);
        }
    }

    fn open(&mut self, name: &str, is_html: bool) -> Result<()> {
        // The title lives in <head>, which is otherwise skipped; an SVG
        // drawing's <title> names the drawing, not the page.
        if name == "title" && is_html && self.title.is_none() {
            self.title_depth += 1;
        } else if SKIPPED.contains(&name) {
            self.skipped_depth += 1;
        } else if self.skipped_depth > 0 {
            return Ok(());
        } else if heading_level(name).is_some() {
            if self.heading_depth == 0 {
                self.end_block()?;
            }
            self.heading_depth += 1;
        } else if name == "td" || name == "th" {
            self.cell_depth += 1;
        } else if name == "tr" {
            self.end_block()?;
            if self.cell_depth == 0 {
                self.row_cells.clear();
            }
        } else if name == "br" {
            self.text.push(' ');
        } else if BLOCKS.contains(&name) {
            self.end_block()?;
        }
        Ok(())
    }

    fn close(&mut self, name: &str) -> Result<()> {
        if name == "title" && self.title_depth > 0 {
            self.title_depth -= 1;
        } else if SKIPPED.contains(&name) {
            self.skipped_depth = self.skipped_depth.saturating_sub(1);
        } else if self.skipped_depth > 0 {
            return Ok(());
        } else if let Some(level) = heading_level(name) {
            self.heading_depth = self.heading_depth.saturating_sub(1);
            if self.heading_depth == 0 && self.cell_depth == 0 {
                if level == 1 && self.first_h1.is_none() && !self.text.trim().is_empty() {
                    self.first_h1 = Some(self.text.clone());
                }
                self.blocks.push(BlockKind::Heading(level), &self.text)?;
                self.text.clear();
            }
        } else if name == "td" || name == "th" {
            self.cell_depth = self.cell_depth.saturating_sub(1);
            if self.cell_depth == 0 {
                self.end_cell();
            }
        } else if name == "tr" && self.cell_depth == 0 {
            self.end_cell();
            self.blocks
                .push(BlockKind::Paragraph, &self.row_cells.join(" | "))?;
            self.row_cells.clear();
        } else if BLOCKS.contains(&name) {
            self.end_block()?;
        }
        Ok(())
    }

    fn end_cell(&mut self) {
        let cell = normalize_whitespace(&self.text);
        self.text.clear();
        if !cell.is_empty() {
            self.row_cells.push(cell);
        }
    }

    /// Ends the running paragraph at a block boundary. Inside a heading or a
    /// table cell, blocks only separate words: the heading or the row is one block.
    fn end_block(&mut self) -> Result<()> {
        if self.heading_depth + self.cell_depth > 0 {
            self.text.push(' ');
            return Ok(());
        }
        self.blocks.push(BlockKind::Paragraph, &self.text)?;
        self.text.clear();
        Ok(())
    }
}

/// Elements without content: they never nest.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// Elements whose end tag may be left out: the parser closes them itself, so
/// an unclosed one in the source adds no depth.
const OPTIONAL_END: &[&str] = &[
    "body", "caption", "colgroup", "dd", "dt", "head", "html", "li", "optgroup", "option", "p",
    "rb", "rp", "rt", "rtc", "tbody", "td", "tfoot", "th", "thead", "tr",
];

/// Inline elements: html5ever handles their start tags without walking the
/// stack of open elements.
const PHRASING: &[&str] = &[
    "a", "abbr", "b", "bdi", "bdo", "big", "br", "cite", "code", "data", "dfn", "em", "font", "i",
    "img", "kbd", "mark", "nobr", "q", "s", "samp", "small", "span", "strike", "strong", "sub",
    "sup", "time", "tt", "u", "var", "wbr",
];

/// An estimate, from the tags alone, of the work html5ever spends on open
/// elements: a block start tag (`<div>`, `<p>`, `<li>`…) or a `</p>` makes it
/// walk the stack of open elements, so ten thousand nested `<div>`s cost 5·10⁷
/// steps and a few hundred kilobytes of them would take minutes. Linear in the input.
fn nesting_work(source: &str) -> u64 {
    let bytes = source.as_bytes();
    let (mut depth, mut work) = (0u64, 0u64);
    for (position, _) in bytes.iter().enumerate().filter(|(_, byte)| **byte == b'<') {
        let rest = &bytes[position + 1..];
        let closing = rest.first() == Some(&b'/');
        let name: Vec<u8> = rest[usize::from(closing)..]
            .iter()
            .take_while(|byte| byte.is_ascii_alphanumeric())
            .take(16)
            .map(u8::to_ascii_lowercase)
            .collect();
        let Ok(name) = std::str::from_utf8(&name) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        let nests = !VOID.contains(&name) && !OPTIONAL_END.contains(&name);
        if closing {
            if name == "p" {
                work = work.saturating_add(depth);
            }
            if nests {
                depth = depth.saturating_sub(1);
            }
        } else {
            if !PHRASING.contains(&name) {
                work = work.saturating_add(depth);
            }
            if nests {
                depth += 1;
            }
        }
    }
    work
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// Decodes the page as a browser would: a byte-order mark wins, then UTF-8
/// when the bytes are valid UTF-8, then the charset the page declares in its
/// first kilobyte, else windows-1252 (the web's legacy default).
fn decode(bytes: &[u8]) -> Result<Cow<'_, str>> {
    if let Some((encoding, bom_length)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, _) = encoding.decode_without_bom_handling(&bytes[bom_length..]);
        return Ok(text);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok(Cow::Borrowed(text));
    }
    let encoding = declared_charset(bytes).unwrap_or(encoding_rs::WINDOWS_1252);
    let (text, _, had_errors) = encoding.decode(bytes);
    if had_errors && encoding == encoding_rs::UTF_8 {
        return Err(refuse(
            "the HTML file declares UTF-8 but is not valid UTF-8; save it as UTF-8 and upload it again",
        ));
    }
    Ok(text)
}

/// The encoding named by `charset=` in the first kilobyte (a `<meta>` tag).
fn declared_charset(bytes: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let head = &bytes[..bytes.len().min(1024)];
    let lowercase = head.to_ascii_lowercase();
    let start = lowercase
        .windows(8)
        .position(|window| window == b"charset=")?
        + 8;
    let label: Vec<u8> = lowercase[start..]
        .iter()
        .skip_while(|byte| matches!(byte, b'"' | b'\'' | b' '))
        .take_while(|byte| {
            byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b':' | b'.')
        })
        .copied()
        .collect();
    encoding_rs::Encoding::for_label(&label)
}
