//! Text extraction from uploaded documents: plain text, Markdown, HTML and PDF
//! (with a text layer), behind the domain's [`DocumentExtractor`] port. Every
//! refusal is [`Error::Invalid`] on the field `file` with a message the
//! uploader can act on; a hostile or damaged file is refused, never a panic.

mod html;
mod markdown;
mod pdf;
mod text;

use karen_domain::documents::{
    BlockKind, DocumentExtractor, DocumentFormat, ExtractedDocument, TextBlock,
};
use karen_domain::{Error, Result};

/// Bounds on the work one extraction may do, so that a hostile file cannot
/// hold a worker for minutes or fill its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractionLimits {
    /// The largest file read, in bytes.
    pub max_file_bytes: usize,
    /// The most characters of text kept from one document.
    pub max_text_chars: usize,
    /// The most pages a PDF may have.
    pub max_pdf_pages: usize,
    /// The most bytes one compressed PDF stream may inflate to.
    pub max_pdf_stream_bytes: usize,
    /// The most bytes the page contents and font maps of one PDF may inflate
    /// to, all pages together: many pages can share one large stream.
    pub max_pdf_content_bytes: usize,
    /// The most work the HTML parser may spend on nested elements, estimated
    /// from the tags before parsing: its cost grows with depth × elements.
    pub max_html_nesting_work: u64,
}

impl Default for ExtractionLimits {
    /// Room for a 2,000-page book; a file past these limits is refused.
    fn default() -> Self {
        Self {
            max_file_bytes: 64 * 1024 * 1024,
            max_text_chars: 5_000_000,
            max_pdf_pages: 2_000,
            max_pdf_stream_bytes: 32 * 1024 * 1024,
            max_pdf_content_bytes: 128 * 1024 * 1024,
            // Above real pages (100,000 elements 30 deep is 3·10⁶); well under a second of parsing.
            max_html_nesting_work: 10_000_000,
        }
    }
}

/// Reads the text of plain text, Markdown, HTML and PDF files.
#[derive(Debug, Clone, Default)]
pub struct DocumentParser {
    limits: ExtractionLimits,
}

impl DocumentParser {
    /// A parser with the default [`ExtractionLimits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser with the given limits.
    pub fn with_limits(limits: ExtractionLimits) -> Self {
        Self { limits }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> &ExtractionLimits {
        &self.limits
    }
}

impl DocumentExtractor for DocumentParser {
    fn extract(&self, format: DocumentFormat, bytes: &[u8]) -> Result<ExtractedDocument> {
        if bytes.is_empty() {
            return Err(refuse("the file contains no text"));
        }
        if bytes.len() > self.limits.max_file_bytes {
            return Err(refuse(format!(
                "the file is {} bytes; documents of at most {} bytes are accepted: split it into smaller files",
                bytes.len(),
                self.limits.max_file_bytes
            )));
        }
        let document = match format {
            DocumentFormat::Text => text::extract(bytes, &self.limits)?,
            DocumentFormat::Markdown => markdown::extract(bytes, &self.limits)?,
            DocumentFormat::Html => html::extract(bytes, &self.limits)?,
            DocumentFormat::Pdf => pdf::extract(bytes, &self.limits)?,
        };
        if document.blocks.is_empty() {
            return Err(refuse("the file contains no text"));
        }
        Ok(document)
    }
}

/// The refusal of an uploaded file.
pub(crate) fn refuse(message: impl Into<String>) -> Error {
    Error::invalid(Some("file"), message)
}

/// How a format is named in messages to the uploader.
pub(crate) fn format_name(format: DocumentFormat) -> &'static str {
    match format {
        DocumentFormat::Text => "text file",
        DocumentFormat::Markdown => "Markdown file",
        DocumentFormat::Html => "HTML file",
        DocumentFormat::Pdf => "PDF",
    }
}

/// Decodes a UTF-8 upload, dropping a byte-order mark. Text formats other than
/// HTML carry no declaration of their encoding, so guessing one would turn a
/// wrongly saved file into silently garbled passages: refuse it instead.
pub(crate) fn decode_utf8(bytes: &[u8], format: DocumentFormat) -> Result<&str> {
    let name = format_name(format);
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(refuse(format!(
            "the {name} is UTF-16 encoded; save it as UTF-8 and upload it again"
        )));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|error| {
        refuse(format!(
            "the {name} is not valid UTF-8 (invalid byte at offset {}); save it as UTF-8 and upload it again",
            error.valid_up_to()
        ))
    })?;
    refuse_binary(text, format)?;
    Ok(text)
}

/// Refuses text with NUL characters: no text format has them, so the file is
/// binary (say a PDF or an image) uploaded under the wrong type.
pub(crate) fn refuse_binary(text: &str, format: DocumentFormat) -> Result<()> {
    if text.contains('\0') {
        return Err(refuse(format!(
            "the file looks binary, not like a {}; upload it with its own type",
            format_name(format)
        )));
    }
    Ok(())
}

/// Collapses runs of whitespace (line breaks included) into single spaces.
pub(crate) fn normalize_whitespace(text: &str) -> String {
    let mut normalized = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !normalized.is_empty() {
            normalized.push(' ');
        }
        normalized.push_str(word);
    }
    normalized
}

/// Collects a document's blocks in reading order: whitespace normalised, empty
/// blocks dropped, and the total text bounded by [`ExtractionLimits::max_text_chars`].
pub(crate) struct BlockCollector {
    format: DocumentFormat,
    max_chars: usize,
    chars: usize,
    blocks: Vec<TextBlock>,
}

impl BlockCollector {
    pub(crate) fn new(format: DocumentFormat, limits: &ExtractionLimits) -> Self {
        Self {
            format,
            max_chars: limits.max_text_chars,
            chars: 0,
            blocks: Vec::new(),
        }
    }

    /// Adds a block unless its text is blank; refuses a document whose text
    /// goes past the limit rather than index part of it without saying so.
    pub(crate) fn push(&mut self, kind: BlockKind, text: &str) -> Result<()> {
        let text = normalize_whitespace(text);
        if text.is_empty() {
            return Ok(());
        }
        self.chars += text.chars().count();
        if self.chars > self.max_chars {
            return Err(self.too_much_text());
        }
        self.blocks.push(TextBlock { kind, text });
        Ok(())
    }

    /// The refusal of a document with more text than the limit.
    pub(crate) fn too_much_text(&self) -> Error {
        refuse(format!(
            "the {} holds more than {} characters of text; split it into smaller files",
            format_name(self.format),
            self.max_chars
        ))
    }

    pub(crate) fn finish(self, title: Option<String>) -> ExtractedDocument {
        let title = title
            .map(|title| normalize_whitespace(&title))
            .filter(|title| !title.is_empty());
        ExtractedDocument {
            title,
            blocks: self.blocks,
        }
    }
}
