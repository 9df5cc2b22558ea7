//! Documents as Karen indexes them: the formats it accepts, the text it
//! extracts from them (headings and paragraphs), and how that text is cut into
//! overlapping passages (chunks) for retrieval. Pure functions, no I/O; the
//! parsing of each format is behind the [`DocumentExtractor`] port.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod chunking;

pub use chunking::{ChunkingConfig, DraftChunk, HEADING_PATH_SEPARATOR, chunk_document};

/// A document format Karen can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentFormat {
    /// UTF-8 plain text.
    Text,
    /// CommonMark / GitHub-flavoured Markdown.
    Markdown,
    /// An HTML page.
    Html,
    /// A PDF with a text layer (scanned images without text are refused).
    Pdf,
}

impl DocumentFormat {
    /// Every format, for messages that list what is accepted.
    pub const ALL: [DocumentFormat; 4] = [
        DocumentFormat::Text,
        DocumentFormat::Markdown,
        DocumentFormat::Html,
        DocumentFormat::Pdf,
    ];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            DocumentFormat::Text => "text",
            DocumentFormat::Markdown => "markdown",
            DocumentFormat::Html => "html",
            DocumentFormat::Pdf => "pdf",
        }
    }

    /// The canonical media type.
    pub const fn media_type(self) -> &'static str {
        match self {
            DocumentFormat::Text => "text/plain",
            DocumentFormat::Markdown => "text/markdown",
            DocumentFormat::Html => "text/html",
            DocumentFormat::Pdf => "application/pdf",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|format| format.as_str() == text)
            .ok_or_else(|| Error::Internal(format!("unknown document format '{text}'")))
    }

    /// The format of a media type (parameters such as `charset` are ignored),
    /// or `None` when Karen does not read it.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let essence = media_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/plain" => Some(DocumentFormat::Text),
            "text/markdown" | "text/x-markdown" => Some(DocumentFormat::Markdown),
            "text/html" | "application/xhtml+xml" => Some(DocumentFormat::Html),
            "application/pdf" => Some(DocumentFormat::Pdf),
            _ => None,
        }
    }

    /// The format a file name's extension stands for, or `None`.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match extension.as_str() {
            "txt" | "text" => Some(DocumentFormat::Text),
            "md" | "markdown" => Some(DocumentFormat::Markdown),
            "html" | "htm" | "xhtml" => Some(DocumentFormat::Html),
            "pdf" => Some(DocumentFormat::Pdf),
            _ => None,
        }
    }

    /// The error for a media type or file Karen does not read.
    pub fn unsupported(what: &str) -> Error {
        let accepted: Vec<&str> = Self::ALL.iter().map(|f| f.media_type()).collect();
        Error::invalid(
            Some("file"),
            format!(
                "{what} is not a supported document type; upload one of: {}",
                accepted.join(", ")
            ),
        )
    }
}

/// What a block of extracted text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "level")]
pub enum BlockKind {
    /// A heading of level 1 (top) to 6.
    Heading(u8),
    /// A paragraph, list item, table row, code block or quote: running text.
    Paragraph,
}

/// One block of a document's text, in reading order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextBlock {
    pub kind: BlockKind,
    /// Whitespace-normalised text; never empty.
    pub text: String,
}

/// The text of a document, as an extractor read it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExtractedDocument {
    /// The document's own title (HTML `<title>`, PDF metadata, the first
    /// level-1 heading of Markdown), when it has one.
    pub title: Option<String>,
    pub blocks: Vec<TextBlock>,
}

/// Reads the text of a document. Implementations refuse a file that is not
/// of the format it claims, is damaged, or has no text (a scanned PDF) with
/// [`Error::Invalid`] on the field `file`, and never return an empty document.
pub trait DocumentExtractor: Send + Sync + 'static {
    fn extract(&self, format: DocumentFormat, bytes: &[u8]) -> Result<ExtractedDocument>;
}
