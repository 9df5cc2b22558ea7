//! PDF, read with lopdf: the text layer of each page, cut into paragraphs at
//! blank lines, and the title from the document information dictionary.
//!
//! lopdf's own `extract_text` joins lines positioned with `Td`/`Tm` without a
//! space ("end of oneStart of two"), which loses words; the loop here walks
//! the text operators itself and breaks lines where the text moves down.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use karen_domain::documents::{BlockKind, DocumentFormat, ExtractedDocument};
use karen_domain::{Error, Result};
use lopdf::content::Content;
use lopdf::{DecompressError, Dictionary, Document, Encoding, LoadOptions, Object, ObjectId};

use crate::{BlockCollector, ExtractionLimits, refuse};

/// A vertical move of more than this many font heights between two lines is a
/// gap between paragraphs rather than a line break.
const PARAGRAPH_GAP: f32 = 1.6;
/// In a `TJ` array, a move left of more than this many thousandths of an em
/// separates words (smaller ones are kerning).
const WORD_GAP: f32 = 200.0;

/// Reads a PDF's text layer; refuses files that are not PDFs, are damaged,
/// password-protected, larger than the limits, or have no text (scans).
pub(crate) fn extract(bytes: &[u8], limits: &ExtractionLimits) -> Result<ExtractedDocument> {
    // The header may follow some junk, but must be near the start (ISO 32000 §7.5.2 notes).
    let head = &bytes[..bytes.len().min(1024)];
    if !head.windows(5).any(|window| window == b"%PDF-") {
        return Err(refuse(
            "the file is not a PDF (it has no %PDF- header); upload a PDF or choose the file's real type",
        ));
    }
    refuse_on_panic(|| read(bytes, limits))
}

/// Runs the parser, turning a panic into a refusal: lopdf is fuzzed but not
/// proven panic-free on hostile input, and a corrupt upload must refuse one
/// file, never take a server thread down. Only `Document`s built inside the
/// closure are touched, so no broken state outlives the panic.
fn refuse_on_panic(parse: impl FnOnce() -> Result<ExtractedDocument>) -> Result<ExtractedDocument> {
    catch_unwind(AssertUnwindSafe(parse)).unwrap_or_else(|_| {
        tracing::warn!("pdf parser panicked on an upload; refused it as damaged");
        Err(damaged())
    })
}

fn damaged() -> Error {
    refuse(
        "the PDF is damaged and cannot be read; open it in a PDF reader, save or print it as a new PDF, and upload that",
    )
}

fn password_protected() -> Error {
    refuse(
        "the PDF is password-protected; remove the password (save an unprotected copy) and upload that",
    )
}

fn too_much_content(limits: &ExtractionLimits) -> Error {
    refuse(format!(
        "the PDF holds more than {} MiB of page content; split it into smaller files",
        limits.max_pdf_content_bytes.div_ceil(1024 * 1024)
    ))
}

fn read(bytes: &[u8], limits: &ExtractionLimits) -> Result<ExtractedDocument> {
    let options = LoadOptions {
        max_decompressed_size: Some(limits.max_pdf_stream_bytes),
        ..LoadOptions::default()
    };
    let document =
        Document::load_mem_with_options(bytes, options).map_err(|error| match error {
            lopdf::Error::InvalidPassword | lopdf::Error::Decryption(_) => password_protected(),
            lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. }) => {
                too_much_content(limits)
            }
            _ => damaged(),
        })?;
    // lopdf opens files whose user password is empty (permissions-only
    // encryption, which every reader opens without asking); the Encrypt entry
    // stays only when a password is needed to read the text.
    if document.is_encrypted() {
        return Err(password_protected());
    }
    let pages = document.get_pages();
    if pages.is_empty() {
        return Err(damaged());
    }
    if pages.len() > limits.max_pdf_pages {
        return Err(refuse(format!(
            "the PDF has {} pages; at most {} are accepted: split it into smaller files",
            pages.len(),
            limits.max_pdf_pages
        )));
    }

    let mut reader = PageReader {
        document: &document,
        limits,
        budget: limits.max_pdf_content_bytes,
        encodings: HashMap::new(),
    };
    let mut blocks = BlockCollector::new(DocumentFormat::Pdf, limits);
    let mut unreadable_pages = 0usize;
    for page_id in pages.values() {
        let Some(text) = reader.page_text(*page_id)? else {
            unreadable_pages += 1;
            continue;
        };
        for paragraph in text.split("\n\n") {
            blocks.push(BlockKind::Paragraph, paragraph)?;
        }
    }
    let document_title = title(&document);
    let extracted = blocks.finish(document_title);
    if extracted.blocks.is_empty() {
        if unreadable_pages == pages.len() {
            return Err(damaged());
        }
        return Err(refuse(
            "the PDF has no text layer; scanned documents are not supported: run OCR on it (or export it with its text) and upload the result",
        ));
    }
    Ok(extracted)
}

/// The title in the document information dictionary, if any.
fn title(document: &Document) -> Option<String> {
    let info = document
        .trailer
        .get_deref(b"Info", document)
        .ok()?
        .as_dict()
        .ok()?;
    let title = info.get_deref(b"Title", document).ok()?;
    lopdf::decode_text_string(title).ok()
}

/// Reads the text of pages, charging every stream it inflates (page contents
/// and fonts' character maps) to one budget for the whole document: many pages
/// can share one large stream, so per-stream limits alone do not bound the work.
struct PageReader<'a> {
    document: &'a Document,
    limits: &'a ExtractionLimits,
    budget: usize,
    /// Each font's encoding, by the font dictionary's identity: pages share fonts.
    encodings: HashMap<*const Dictionary, Option<Encoding<'a>>>,
}

impl<'a> PageReader<'a> {
    /// The page's text with `\n` between lines and `\n\n` between paragraphs,
    /// or `None` when its content cannot be decoded.
    fn page_text(&mut self, page_id: ObjectId) -> Result<Option<String>> {
        let content = match self
            .document
            .get_page_content_with_limit(page_id, self.budget)
        {
            Ok(content) => content,
            Err(lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })) => {
                return Err(too_much_content(self.limits));
            }
            Err(_) => return Ok(None),
        };
        self.charge(content.len())?;
        let fonts = self.document.get_page_fonts(page_id).unwrap_or_default();
        let mut page_fonts: HashMap<Vec<u8>, *const Dictionary> = HashMap::new();
        for (name, font) in fonts {
            let key: *const Dictionary = font;
            if !self.encodings.contains_key(&key) {
                let encoding = self.font_encoding(font)?;
                self.encodings.insert(key, encoding);
            }
            page_fonts.insert(name, key);
        }
        let mut text = TextState::default();
        // One operation at a time: a large page never holds all its operations in memory.
        for operation in Content::decode_iter(&content) {
            let Ok(operation) = operation else {
                // The text before a damaged operation is still the page's text.
                if text.output.trim().is_empty() {
                    return Ok(None);
                }
                break;
            };
            let operands = operation.operands.as_slice();
            match operation.operator.as_str() {
                "BT" => text.begin(),
                "Tf" => {
                    text.encoding = operands
                        .first()
                        .and_then(|name| name.as_name().ok())
                        .and_then(|name| page_fonts.get(name))
                        .and_then(|key| self.encodings.get(key))
                        .and_then(Option::as_ref);
                    text.font_size = number(operands.get(1)).abs();
                }
                "TL" => text.leading = number(operands.first()),
                "Td" => text.move_line(number(operands.get(1))),
                "TD" => {
                    text.leading = -number(operands.get(1));
                    text.move_line(number(operands.get(1)));
                }
                "Tm" => {
                    text.scale = number(operands.get(3)).abs();
                    text.y = number(operands.get(5));
                    text.moved = true;
                }
                "T*" => text.next_line(),
                "Tj" | "TJ" => text.show(operands),
                "'" => {
                    text.next_line();
                    text.show(operands);
                }
                "\"" => {
                    text.next_line();
                    text.show(operands.get(2..).unwrap_or_default());
                }
                _ => {}
            }
        }
        Ok(Some(text.output))
    }

    /// A font's encoding, its character map (if any) charged to the budget first.
    fn font_encoding(&mut self, font: &'a Dictionary) -> Result<Option<Encoding<'a>>> {
        let limit = self.limits.max_pdf_stream_bytes.min(self.budget);
        if let Ok(stream) = font
            .get_deref(b"ToUnicode", self.document)
            .and_then(Object::as_stream)
        {
            match stream.decompressed_content_with_limit(limit) {
                Ok(map) => self.charge(map.len())?,
                Err(lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })) => {
                    return Err(too_much_content(self.limits));
                }
                Err(_) => self.charge(stream.content.len())?,
            }
        }
        Ok(font.get_font_encoding_with_limit(self.document, limit).ok())
    }

    fn charge(&mut self, bytes: usize) -> Result<()> {
        self.budget = self
            .budget
            .checked_sub(bytes)
            .ok_or_else(|| too_much_content(self.limits))?;
        Ok(())
    }
}

/// The text state of a content stream, as far as reading order needs it: the
/// vertical position of the line (user space, ignoring the CTM) and the font.
struct TextState<'e> {
    output: String,
    encoding: Option<&'e Encoding<'e>>,
    font_size: f32,
    leading: f32,
    /// The text line matrix's vertical scale and position.
    scale: f32,
    y: f32,
    /// Where the last text was shown, to tell a new line from a new run on the same line.
    last_shown_y: Option<f32>,
    moved: bool,
}

impl Default for TextState<'_> {
    fn default() -> Self {
        Self {
            output: String::new(),
            encoding: None,
            font_size: 1.0,
            leading: 0.0,
            scale: 1.0,
            y: 0.0,
            last_shown_y: None,
            moved: false,
        }
    }
}

impl<'e> TextState<'e> {
    /// `BT` resets the text matrix to the identity.
    fn begin(&mut self) {
        self.scale = 1.0;
        self.y = 0.0;
        self.moved = true;
    }

    fn move_line(&mut self, ty: f32) {
        self.y += ty * self.scale;
        self.moved = true;
    }

    fn next_line(&mut self) {
        self.move_line(-self.leading);
    }

    fn show(&mut self, operands: &[Object]) {
        let Some(encoding) = self.encoding else {
            return;
        };
        self.separate();
        for operand in operands {
            match operand {
                Object::String(bytes, _) => self.write(encoding, bytes),
                Object::Array(items) => {
                    for item in items {
                        match item {
                            Object::String(bytes, _) => self.write(encoding, bytes),
                            Object::Integer(_) | Object::Real(_)
                                if number(Some(item)) < -WORD_GAP =>
                            {
                                self.space();
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Separates the text about to be shown from the text before it: a line
    /// break when the text moved down or up, a space when it moved along the line.
    fn separate(&mut self) {
        if let Some(last_y) = self.last_shown_y {
            let font_height = (self.font_size * self.scale).max(f32::EPSILON);
            let distance = (self.y - last_y).abs();
            if distance > PARAGRAPH_GAP * font_height {
                self.output.push_str("\n\n");
            } else if distance > 0.5 * font_height {
                self.output.push('\n');
            } else if self.moved {
                self.space();
            }
        }
        self.last_shown_y = Some(self.y);
        self.moved = false;
    }

    fn space(&mut self) {
        if !self.output.ends_with(char::is_whitespace) {
            self.output.push(' ');
        }
    }

    fn write(&mut self, encoding: &Encoding<'_>, bytes: &[u8]) {
        let mut decoded = String::new();
        if encoding.write_to_string(bytes, &mut decoded).is_err() {
            return;
        }
        // Unmapped glyphs come out as control characters or U+FFFD: noise, not text.
        let kept = decoded
            .chars()
            .filter(|c| (c.is_whitespace() || !c.is_control()) && *c != '\u{FFFD}')
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c });
        self.output.extend(kept);
    }
}

/// A numeric operand, or 0 for a missing or non-numeric one.
fn number(operand: Option<&Object>) -> f32 {
    operand
        .and_then(|object| object.as_float().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lopdf::dictionary;

    #[test]
    fn a_panicking_parser_refuses_the_file() {
        let result = refuse_on_panic(|| panic!("index out of bounds in a corrupt xref"));
        match result {
            Err(Error::Invalid { field, message }) => {
                assert_eq!(field.as_deref(), Some("file"));
                assert!(message.contains("PDF is damaged"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn text_on_one_line_is_spaced_and_lines_are_broken() {
        let document = Document::new();
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "Encoding" => "WinAnsiEncoding",
        };
        let encoding = font.get_font_encoding(&document).unwrap();
        let mut state = TextState {
            encoding: Some(&encoding),
            font_size: 10.0,
            ..TextState::default()
        };
        state.show(&[Object::string_literal("left")]);
        state.moved = true;
        state.show(&[Object::string_literal("right")]);
        state.move_line(-12.0);
        state.show(&[Object::string_literal("next\u{1}")]);
        state.move_line(-30.0);
        state.show(&[Object::string_literal("para")]);
        assert_eq!(state.output, "left right\nnext\n\npara");
    }
}
