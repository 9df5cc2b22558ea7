use karen_domain::documents::{ChunkingConfig, DocumentFormat, chunk_document};

use crate::extract;

/// A realistic handbook: sections of several paragraphs, one very long.
fn handbook() -> String {
    let long_paragraph = (1..=40)
        .map(|n| format!("Sentence number {n} explains one more detail of the backup procedure."))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "# Operations Handbook\n\nThis handbook is for operators.\n\n\
         ## Backups\n\n{long_paragraph}\n\nRestore with `karen backup restore`.\n\n\
         ### Retention\n\nBackups are kept for thirty days.\n\n\
         ## Upgrades\n\nStop, replace the binary, start. Migrations run at start.\n"
    )
}

#[test]
fn an_extracted_markdown_document_is_chunked_by_section() {
    let document = extract(DocumentFormat::Markdown, handbook().as_bytes());
    let config = ChunkingConfig {
        target_chars: 400,
        overlap_chars: 80,
    };
    let chunks = chunk_document(&document, &config);

    let ordinals: Vec<u32> = chunks.iter().map(|chunk| chunk.ordinal).collect();
    assert_eq!(ordinals, (0..chunks.len() as u32).collect::<Vec<_>>());
    assert_eq!(chunks[0].heading.as_deref(), Some("Operations Handbook"));
    assert!(
        chunks[0]
            .text
            .starts_with("Operations Handbook\nThis handbook")
    );

    let backups: Vec<_> = chunks
        .iter()
        .filter(|chunk| chunk.heading.as_deref() == Some("Operations Handbook > Backups"))
        .collect();
    assert!(
        backups.len() >= 5,
        "the long paragraph is cut: {backups:#?}"
    );
    assert!(backups[0].text.starts_with("Backups\nSentence number 1 "));
    for pair in backups.windows(2) {
        let next = &pair[1].text;
        assert!(
            next.starts_with("Sentence number"),
            "overlap starts a sentence: {next}"
        );
        let overlap_end = next.find(". ").unwrap() + 1;
        assert!(pair[0].text.ends_with(&next[..overlap_end]), "{pair:#?}");
    }
    for chunk in &chunks {
        let heading_lines = chunk.text.lines().take_while(|line| {
            chunk
                .heading
                .as_deref()
                .is_some_and(|path| path.split(" > ").any(|h| h == *line))
        });
        let heading_chars: usize = heading_lines.map(|line| line.chars().count() + 1).sum();
        assert!(
            chunk.text.chars().count() - heading_chars <= 480,
            "{chunk:#?}"
        );
    }
    let retention = chunks
        .iter()
        .find(|c| c.text.contains("thirty days"))
        .unwrap();
    assert_eq!(
        retention.heading.as_deref(),
        Some("Operations Handbook > Backups > Retention")
    );
    let last = chunks.last().unwrap();
    assert_eq!(
        last.heading.as_deref(),
        Some("Operations Handbook > Upgrades")
    );
    assert_eq!(
        last.text,
        "Upgrades\nStop, replace the binary, start. Migrations run at start."
    );

    let all_text: String = chunks.iter().map(|chunk| chunk.text.as_str()).collect();
    for block in &document.blocks {
        for word in block.text.split_whitespace() {
            assert!(all_text.contains(word), "lost {word}");
        }
    }
}

#[test]
fn default_chunking_keeps_a_short_document_whole() {
    let document = extract(
        DocumentFormat::Text,
        b"One paragraph.\n\nAnother paragraph.",
    );
    let chunks = chunk_document(&document, &ChunkingConfig::default());
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].text, "One paragraph.\n\nAnother paragraph.");
    assert_eq!(chunks[0].heading, None);
}
