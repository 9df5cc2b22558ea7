use karen_docs::DocumentParser;
use karen_domain::documents::{DocumentExtractor, DocumentFormat};

use crate::{extract, paragraph, refusal};

#[test]
fn paragraphs_split_at_blank_lines_with_whitespace_normalised() {
    let bytes =
        "\u{FEFF}First line\r\n  wraps here.\r\n\r\n \t \nSecond\tparagraph  — naïve café.\n\n\n";
    let document = extract(DocumentFormat::Text, bytes.as_bytes());
    assert_eq!(document.title, None);
    assert_eq!(
        document.blocks,
        vec![
            paragraph("First line wraps here."),
            paragraph("Second paragraph — naïve café."),
        ]
    );
}

#[test]
fn invalid_utf8_is_refused_with_its_offset() {
    let message = refusal(DocumentParser::new().extract(DocumentFormat::Text, b"caf\xE9 latin-1"));
    assert!(
        message.contains("text file is not valid UTF-8"),
        "{message}"
    );
    assert!(message.contains("offset 3"), "{message}");
}

#[test]
fn utf16_and_binary_files_are_refused() {
    let message = refusal(DocumentParser::new().extract(DocumentFormat::Text, b"\xFF\xFEh\0i\0"));
    assert!(message.contains("UTF-16"), "{message}");
    let message =
        refusal(DocumentParser::new().extract(DocumentFormat::Text, b"PK\x03\x04\0\0data"));
    assert!(message.contains("looks binary"), "{message}");
}

#[test]
fn whitespace_only_text_is_refused() {
    let message =
        refusal(DocumentParser::new().extract(DocumentFormat::Text, b"\xEF\xBB\xBF \n\n\t\r\n"));
    assert_eq!(message, "the file contains no text");
}
