//! Plain text: paragraphs are separated by blank lines.

use karen_domain::Result;
use karen_domain::documents::{BlockKind, DocumentFormat, ExtractedDocument};

use crate::{BlockCollector, ExtractionLimits, decode_utf8};

/// Reads a UTF-8 text file; it has no title.
pub(crate) fn extract(bytes: &[u8], limits: &ExtractionLimits) -> Result<ExtractedDocument> {
    let text = decode_utf8(bytes, DocumentFormat::Text)?;
    let mut blocks = BlockCollector::new(DocumentFormat::Text, limits);
    let mut paragraph = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            blocks.push(BlockKind::Paragraph, &paragraph)?;
            paragraph.clear();
        } else {
            paragraph.push_str(line);
            paragraph.push('\n');
        }
    }
    blocks.push(BlockKind::Paragraph, &paragraph)?;
    Ok(blocks.finish(None))
}
