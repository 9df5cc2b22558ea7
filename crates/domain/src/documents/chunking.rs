//! Cutting extracted text into overlapping passages (chunks) for retrieval.

use serde::{Deserialize, Serialize};

use super::{BlockKind, ExtractedDocument};

/// How [`chunk_document`] cuts a document into passages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkingConfig {
    /// The most characters (not bytes) of new text in one chunk; 0 is read as 1.
    pub target_chars: usize,
    /// The most characters a chunk repeats from the end of the previous chunk of
    /// the same section, so a passage cut in two is still found whole.
    pub overlap_chars: usize,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        Self {
            target_chars: 1000,
            overlap_chars: 150,
        }
    }
}

/// One passage of a document, ready to be stored and embedded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftChunk {
    /// Position in reading order: 0, 1, 2…
    pub ordinal: u32,
    /// The path of headings the passage is under, e.g. `Install > Linux`.
    pub heading: Option<String>,
    /// The passage. The first chunk of a section starts with its heading line;
    /// later chunks of the section start with the overlap.
    pub text: String,
}

/// Separates the headings of [`DraftChunk::heading`].
pub const HEADING_PATH_SEPARATOR: &str = " > ";
/// Ends a sentence when followed by whitespace.
const SENTENCE_ENDS: &[char] = &['.', '!', '?', '…', '。', '！', '？'];
/// End a sentence even when text follows at once: CJK scripts put no space after them.
const WIDE_SENTENCE_ENDS: &[char] = &['。', '！', '？'];
/// May stand between a sentence's end and the whitespace after it.
const CLOSERS: &[char] = &['"', '\'', ')', ']', '”', '’', '»', '」', '』'];

/// Cuts a document into passages for retrieval. A heading starts a new chunk;
/// paragraphs are packed whole up to `target_chars`; a longer paragraph is cut
/// at sentence ends, else at whitespace, else between characters; consecutive
/// chunks of one section overlap by up to `overlap_chars`, cut at a sentence or
/// word start. A chunk holds at most `target_chars + overlap_chars` characters
/// after its heading lines. A heading followed directly by a sub-heading has no
/// text of its own, so its line leads the sub-heading's chunk rather than
/// making a chunk of a few words.
pub fn chunk_document(doc: &ExtractedDocument, config: &ChunkingConfig) -> Vec<DraftChunk> {
    let mut chunker = Chunker {
        target_chars: config.target_chars.max(1),
        overlap_chars: config.overlap_chars,
        path: Vec::new(),
        pending_headings: Vec::new(),
        overlap: String::new(),
        new_text: String::new(),
        new_chars: 0,
        chunks: Vec::new(),
    };
    for block in &doc.blocks {
        match block.kind {
            BlockKind::Heading(level) => chunker.heading(level, &block.text),
            BlockKind::Paragraph => chunker.paragraph(&block.text),
        }
    }
    chunker.finish()
}

/// The state of [`chunk_document`] while it reads blocks in order.
struct Chunker {
    target_chars: usize,
    overlap_chars: usize,
    /// The enclosing headings with their levels, outermost first.
    path: Vec<(u8, String)>,
    /// Heading lines that no chunk holds yet.
    pending_headings: Vec<String>,
    /// The start of the chunk being filled, repeated from the previous one
    /// (with its separator); it does not count against `target_chars`.
    overlap: String,
    /// The chunk's own text.
    new_text: String,
    new_chars: usize,
    chunks: Vec<DraftChunk>,
}

impl Chunker {
    fn heading(&mut self, level: u8, text: &str) {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            return;
        }
        self.flush();
        // Overlap never crosses a heading: the next section is about something else.
        self.overlap.clear();
        let is_subheading = self.path.last().is_some_and(|(parent, _)| level > *parent);
        if !self.pending_headings.is_empty() && !is_subheading {
            self.push_chunk(self.pending_headings.join("\n"));
            self.pending_headings.clear();
        }
        while self.path.last().is_some_and(|(open, _)| *open >= level) {
            self.path.pop();
        }
        self.path.push((level, text.clone()));
        self.pending_headings.push(text);
    }

    fn paragraph(&mut self, text: &str) {
        for (index, piece) in split_passage(text, self.target_chars)
            .into_iter()
            .enumerate()
        {
            self.add_piece(piece, index == 0);
        }
    }

    /// Adds a piece of at most `target_chars` characters; `starts_paragraph`
    /// is false for the second and later pieces of a paragraph that was cut.
    fn add_piece(&mut self, piece: &str, starts_paragraph: bool) {
        let separator = if starts_paragraph { "\n\n" } else { " " };
        let piece_chars = piece.chars().count();
        if !self.new_text.is_empty() {
            let separator_chars = separator.chars().count();
            if self.new_chars + separator_chars + piece_chars <= self.target_chars {
                self.new_text.push_str(separator);
                self.new_text.push_str(piece);
                self.new_chars += separator_chars + piece_chars;
                return;
            }
            let previous = format!("{}{}", self.overlap, self.new_text);
            self.flush();
            let budget = self.overlap_chars.saturating_sub(separator_chars);
            let tail = overlap_tail(&previous, budget);
            if !tail.is_empty() {
                self.overlap = format!("{tail}{separator}");
            }
        }
        self.new_text.push_str(piece);
        self.new_chars += piece_chars;
    }

    /// Emits the chunk being filled, if it has text of its own.
    fn flush(&mut self) {
        if self.new_text.is_empty() {
            return;
        }
        let mut text = String::new();
        if !self.pending_headings.is_empty() {
            text.push_str(&self.pending_headings.join("\n"));
            text.push('\n');
            self.pending_headings.clear();
        }
        text.push_str(&self.overlap);
        text.push_str(&self.new_text);
        self.overlap.clear();
        self.new_text.clear();
        self.new_chars = 0;
        self.push_chunk(text);
    }

    fn push_chunk(&mut self, text: String) {
        let heading = (!self.path.is_empty()).then(|| {
            let names: Vec<&str> = self.path.iter().map(|(_, name)| name.as_str()).collect();
            names.join(HEADING_PATH_SEPARATOR)
        });
        self.chunks.push(DraftChunk {
            ordinal: u32::try_from(self.chunks.len()).unwrap_or(u32::MAX),
            heading,
            text,
        });
    }

    fn finish(mut self) -> Vec<DraftChunk> {
        self.flush();
        if !self.pending_headings.is_empty() {
            self.push_chunk(self.pending_headings.join("\n"));
        }
        self.chunks
    }
}

/// Whether `before` (the text up to a cut) ends a sentence.
fn ends_sentence(before: &str) -> bool {
    before
        .trim_end()
        .trim_end_matches(CLOSERS)
        .ends_with(SENTENCE_ENDS)
}

/// Cuts `text` into trimmed pieces of at most `max_chars` characters (at least 1):
/// at the last sentence end that fits, else the last whitespace, else between
/// two characters (a "word" longer than a piece, such as a URL or CJK text).
fn split_passage(text: &str, max_chars: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        // Finding the window costs max_chars, never the whole rest: long paragraphs stay linear.
        let Some((window_end, first_over)) = rest.char_indices().nth(max_chars) else {
            pieces.push(rest);
            break;
        };
        // The window reaches one character past the limit, to see whether a cut
        // exactly at the limit falls on whitespace.
        let window = &rest[..window_end + first_over.len_utf8()];
        let mut last_sentence = None;
        let mut last_whitespace = None;
        let mut previous: Option<char> = None;
        for (index, character) in window.char_indices() {
            if let Some(before) = previous {
                let at_word_end = character.is_whitespace() && !before.is_whitespace();
                if at_word_end {
                    last_whitespace = Some(index);
                }
                let wide_end = WIDE_SENTENCE_ENDS.contains(&before);
                if (at_word_end && ends_sentence(&rest[..index])) || wide_end {
                    last_sentence = Some(index);
                }
            }
            previous = Some(character);
        }
        let cut = last_sentence.or(last_whitespace).unwrap_or(window_end);
        pieces.push(rest[..cut].trim_end());
        rest = rest[cut..].trim_start();
    }
    pieces
}

/// The longest end of `text` of at most `budget` characters that starts a
/// sentence (or a paragraph), else one that starts a word; empty if none fits.
fn overlap_tail(text: &str, budget: usize) -> &str {
    if budget == 0 {
        return "";
    }
    let total = text.chars().count();
    let earliest = match total.checked_sub(budget) {
        None | Some(0) => 0,
        Some(skip) => text.char_indices().nth(skip).map_or(text.len(), |(i, _)| i),
    };
    if earliest == 0 {
        return text;
    }
    let mut previous = text[..earliest].chars().next_back();
    let mut word_start = None;
    for (offset, character) in text[earliest..].char_indices() {
        let start = earliest + offset;
        let after_space = previous.is_some_and(char::is_whitespace) && !character.is_whitespace();
        if after_space {
            let before = &text[..start];
            let new_paragraph = before.trim_end_matches(|c: char| c != '\n' && c.is_whitespace());
            if ends_sentence(before) || new_paragraph.ends_with('\n') {
                return &text[start..];
            }
            word_start.get_or_insert(start);
        }
        previous = Some(character);
    }
    word_start.map_or("", |start| &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::TextBlock;

    fn heading(level: u8, text: &str) -> TextBlock {
        TextBlock {
            kind: BlockKind::Heading(level),
            text: text.to_owned(),
        }
    }

    fn paragraph(text: &str) -> TextBlock {
        TextBlock {
            kind: BlockKind::Paragraph,
            text: text.to_owned(),
        }
    }

    fn doc(blocks: Vec<TextBlock>) -> ExtractedDocument {
        ExtractedDocument {
            title: None,
            blocks,
        }
    }

    fn config(target_chars: usize, overlap_chars: usize) -> ChunkingConfig {
        ChunkingConfig {
            target_chars,
            overlap_chars,
        }
    }

    /// The rules every chunking must keep, whatever the input.
    fn assert_invariants(document: &ExtractedDocument, config: &ChunkingConfig) {
        let chunks = chunk_document(document, config);
        let target = config.target_chars.max(1);
        for (index, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.ordinal as usize, index);
            assert!(!chunk.text.trim().is_empty(), "empty chunk {chunk:?}");
            let path: Vec<&str> = chunk
                .heading
                .as_deref()
                .map_or(vec![], |h| h.split(" > ").collect());
            let body: Vec<&str> = chunk
                .text
                .lines()
                .skip_while(|line| path.contains(line))
                .collect();
            let body_chars = body.join("\n").chars().count();
            assert!(
                body_chars <= target + config.overlap_chars,
                "{config:?} too long: {chunk:?}"
            );
        }
        let all_text: Vec<&str> = chunks.iter().map(|chunk| chunk.text.as_str()).collect();
        for block in &document.blocks {
            for word in block
                .text
                .split_whitespace()
                .filter(|w| w.chars().count() <= target)
            {
                assert!(
                    all_text.iter().any(|text| text.contains(word)),
                    "{config:?} lost {word:?}"
                );
            }
        }
        if let Some(first_word) = document
            .blocks
            .iter()
            .find_map(|b| b.text.split_whitespace().next())
        {
            let prefix: String = first_word.chars().take(target).collect();
            assert!(
                chunks[0].text.starts_with(&prefix),
                "chunk 0 starts with overlap"
            );
        }
    }

    #[test]
    fn default_config_is_1000_with_150_overlap() {
        assert_eq!(ChunkingConfig::default(), config(1000, 150));
    }

    #[test]
    fn an_empty_document_has_no_chunks() {
        assert!(chunk_document(&doc(vec![]), &ChunkingConfig::default()).is_empty());
        let blank = doc(vec![paragraph("  \n "), heading(1, " ")]);
        assert!(chunk_document(&blank, &ChunkingConfig::default()).is_empty());
    }

    #[test]
    fn headings_start_chunks_and_carry_their_path() {
        let document = doc(vec![
            paragraph("Welcome."),
            heading(1, "Install"),
            heading(2, "Linux"),
            paragraph("Run the installer."),
            heading(2, "macOS"),
            paragraph("Drag the app."),
            heading(1, "Usage"),
            paragraph("Start it."),
            heading(2, "Empty"),
            heading(2, "Trailing"),
        ]);
        let chunks = chunk_document(&document, &ChunkingConfig::default());
        let got: Vec<(Option<&str>, &str)> = chunks
            .iter()
            .map(|c| (c.heading.as_deref(), c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, "Welcome."),
                (
                    Some("Install > Linux"),
                    "Install\nLinux\nRun the installer."
                ),
                (Some("Install > macOS"), "macOS\nDrag the app."),
                (Some("Usage"), "Usage\nStart it."),
                (Some("Usage > Empty"), "Empty"),
                (Some("Usage > Trailing"), "Trailing"),
            ]
        );
    }

    #[test]
    fn short_paragraphs_are_packed_whole() {
        let document = doc(vec![
            paragraph("one two"),
            paragraph("three"),
            paragraph("four five"),
        ]);
        let texts: Vec<String> = chunk_document(&document, &config(16, 0))
            .into_iter()
            .map(|c| c.text)
            .collect();
        assert_eq!(texts, vec!["one two\n\nthree", "four five"]);
    }

    #[test]
    fn long_paragraphs_are_cut_at_sentence_ends_with_overlap() {
        let text = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu.";
        let chunks = chunk_document(&doc(vec![paragraph(text)]), &config(40, 20));
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "Alpha beta gamma. Delta epsilon zeta.",
                "Delta epsilon zeta. Eta theta iota. Kappa lambda mu.",
            ]
        );
    }

    #[test]
    fn sentences_longer_than_a_chunk_are_cut_at_whitespace_then_between_chars() {
        assert_eq!(
            split_passage("aaa bbb ccc ddd", 8),
            vec!["aaa bbb", "ccc ddd"]
        );
        assert_eq!(split_passage("ééééé", 2), vec!["éé", "éé", "é"]);
        assert_eq!(split_passage("🦀🦀🦀 x", 2), vec!["🦀🦀", "🦀", "x"]);
        assert_eq!(
            split_passage("日本語。中文。", 5),
            vec!["日本語。", "中文。"]
        );
        assert_eq!(split_passage("ab. cd", 3), vec!["ab.", "cd"]);
        assert_eq!(split_passage("(Stop.) Go on", 9), vec!["(Stop.)", "Go on"]);
    }

    #[test]
    fn overlap_starts_at_a_sentence_else_a_word() {
        assert_eq!(overlap_tail("One. Two three four.", 12), "three four.");
        assert_eq!(overlap_tail("One. Two three four.", 16), "Two three four.");
        assert_eq!(overlap_tail("one two three four", 11), "three four");
        assert_eq!(overlap_tail("First.\n\nsecond para", 12), "second para");
        assert_eq!(overlap_tail("short", 10), "short");
        assert_eq!(overlap_tail("nospaceatallhere", 5), "");
        assert_eq!(overlap_tail("anything", 0), "");
    }

    #[test]
    fn overlap_never_crosses_a_heading() {
        let long = "word ".repeat(30);
        let document = doc(vec![
            heading(1, "A"),
            paragraph(&long),
            heading(1, "B"),
            paragraph("b"),
        ]);
        let chunks = chunk_document(&document, &config(50, 20));
        let last = chunks.last().map(|c| c.text.as_str());
        assert_eq!(last, Some("B\nb"));
        assert!(
            chunks[1].text.starts_with("word"),
            "second chunk of A overlaps"
        );
    }

    /// A deterministic stand-in for property tests: proptest is not a workspace dependency.
    #[test]
    fn invariants_hold_on_generated_documents() {
        const WORDS: &[&str] = &[
            "the",
            "quick",
            "brown",
            "fox.",
            "jumps!",
            "naïve",
            "café",
            "日本語。",
            "🦀",
            "e.g.",
            "(quoted.)",
            "over?",
            "lazy",
            "supercalifragilisticexpialidocious",
            "dog",
            "—",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let configs = [
            config(1, 0),
            config(7, 3),
            config(20, 5),
            config(50, 0),
            config(80, 30),
        ];
        for _ in 0..60 {
            let mut blocks = Vec::new();
            for _ in 0..next(12) {
                let words: Vec<&str> = (0..next(60)).map(|_| WORDS[next(WORDS.len())]).collect();
                let text = words.join(if next(4) == 0 { "  " } else { " " });
                if next(4) == 0 {
                    blocks.push(heading(1 + next(4) as u8, &text));
                } else {
                    blocks.push(paragraph(&text));
                }
            }
            let document = doc(blocks);
            for config in configs.iter().chain([&ChunkingConfig::default()]) {
                assert_invariants(&document, config);
            }
        }
    }
}
