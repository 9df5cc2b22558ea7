//! Markdown (CommonMark with GitHub's tables, task lists, strikethrough and
//! footnotes), read with pulldown-cmark's event stream.

use karen_domain::Result;
use karen_domain::documents::{BlockKind, DocumentFormat, ExtractedDocument};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::{BlockCollector, ExtractionLimits, decode_utf8};

/// Reads a Markdown file: headings become headings; paragraphs, list items,
/// code blocks, quotes and table rows become paragraphs. The title is the
/// first level-1 heading.
pub(crate) fn extract(bytes: &[u8], limits: &ExtractionLimits) -> Result<ExtractedDocument> {
    let source = decode_utf8(bytes, DocumentFormat::Markdown)?;
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;
    let mut blocks = BlockCollector::new(DocumentFormat::Markdown, limits);
    let mut title = None;
    // Text of the block being read; it is written out when a block starts or ends,
    // so a list item's own text is kept apart from the items nested in it.
    let mut text = String::new();
    let mut table_row: Option<Vec<String>> = None;
    let mut in_metadata = false;
    for event in Parser::new_ext(source, options) {
        match event {
            Event::Start(Tag::MetadataBlock(_)) => in_metadata = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_metadata = false,
            Event::Start(Tag::Heading { .. }) => {
                blocks.push(BlockKind::Paragraph, &text)?;
                text.clear();
            }
            Event::End(TagEnd::Heading(level)) => {
                let level = heading_level(level);
                if level == 1 && title.is_none() && !text.trim().is_empty() {
                    title = Some(text.clone());
                }
                blocks.push(BlockKind::Heading(level), &text)?;
                text.clear();
            }
            Event::Start(Tag::TableHead | Tag::TableRow) => table_row = Some(Vec::new()),
            Event::End(TagEnd::TableCell) => {
                if let Some(cells) = table_row.as_mut() {
                    cells.push(text.trim().to_owned());
                    text.clear();
                }
            }
            Event::End(TagEnd::TableHead | TagEnd::TableRow) => {
                let cells = table_row.take().unwrap_or_default();
                blocks.push(BlockKind::Paragraph, &cells.join(" | "))?;
            }
            Event::Start(tag) if is_block(&tag.to_end()) => {
                blocks.push(BlockKind::Paragraph, &text)?;
                text.clear();
            }
            Event::End(end) if is_block(&end) => {
                blocks.push(BlockKind::Paragraph, &text)?;
                text.clear();
            }
            Event::Text(content)
            | Event::Code(content)
            | Event::InlineMath(content)
            | Event::DisplayMath(content)
                if !in_metadata =>
            {
                text.push_str(&content);
            }
            Event::SoftBreak | Event::HardBreak => text.push(' '),
            Event::TaskListMarker(done) => text.push_str(if done { "[x] " } else { "[ ] " }),
            Event::FootnoteReference(label) => {
                text.push_str("[^");
                text.push_str(&label);
                text.push(']');
            }
            // Raw HTML is markup, not prose; its text would come with tags attached.
            _ => {}
        }
    }
    blocks.push(BlockKind::Paragraph, &text)?;
    Ok(blocks.finish(title))
}

/// Whether an element is a block of its own rather than inline text.
fn is_block(end: &TagEnd) -> bool {
    matches!(
        end,
        TagEnd::Paragraph
            | TagEnd::BlockQuote(_)
            | TagEnd::CodeBlock
            | TagEnd::HtmlBlock
            | TagEnd::List(_)
            | TagEnd::Item
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::Table
    )
}

fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}
