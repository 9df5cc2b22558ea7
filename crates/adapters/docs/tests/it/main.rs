//! Integration tests of karen-docs: one binary, one module per format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chunking;
mod html;
mod markdown;
mod pdf;
mod text;

use karen_docs::DocumentParser;
use karen_domain::Error;
use karen_domain::documents::{
    BlockKind, DocumentExtractor, DocumentFormat, ExtractedDocument, TextBlock,
};

/// Extracts with the default limits, failing the test on a refusal.
pub fn extract(format: DocumentFormat, bytes: &[u8]) -> ExtractedDocument {
    DocumentParser::new()
        .extract(format, bytes)
        .unwrap_or_else(|error| panic!("{format:?} refused: {error}"))
}

/// The message of a refusal on the field `file`, failing the test otherwise.
pub fn refusal(result: Result<ExtractedDocument, Error>) -> String {
    match result {
        Err(Error::Invalid { field, message }) => {
            assert_eq!(field.as_deref(), Some("file"));
            message
        }
        other => panic!("expected a refusal of the file, got {other:?}"),
    }
}

/// Shorthand for expected blocks.
pub fn heading(level: u8, text: &str) -> TextBlock {
    TextBlock {
        kind: BlockKind::Heading(level),
        text: text.to_owned(),
    }
}

/// Shorthand for expected blocks.
pub fn paragraph(text: &str) -> TextBlock {
    TextBlock {
        kind: BlockKind::Paragraph,
        text: text.to_owned(),
    }
}

#[test]
fn every_format_refuses_an_empty_file() {
    for format in DocumentFormat::ALL {
        let message = refusal(DocumentParser::new().extract(format, b""));
        assert_eq!(message, "the file contains no text");
    }
}

#[test]
fn files_over_the_size_limit_are_refused() {
    let parser = DocumentParser::with_limits(karen_docs::ExtractionLimits {
        max_file_bytes: 10,
        ..Default::default()
    });
    let message = refusal(parser.extract(DocumentFormat::Text, b"eleven bytes"));
    assert!(message.contains("at most 10 bytes"), "{message}");
}

#[test]
fn documents_over_the_text_limit_are_refused() {
    let parser = DocumentParser::with_limits(karen_docs::ExtractionLimits {
        max_text_chars: 20,
        ..Default::default()
    });
    let message = refusal(parser.extract(
        DocumentFormat::Markdown,
        b"# Title\n\nmore than twenty characters",
    ));
    assert!(
        message.contains("Markdown file holds more than 20 characters"),
        "{message}"
    );
}
