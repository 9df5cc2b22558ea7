use karen_docs::DocumentParser;
use karen_domain::documents::{DocumentExtractor, DocumentFormat};

use crate::{extract, heading, paragraph, refusal};

const GUIDE: &str = r#"---
title: front matter is metadata, not text
---
Intro *before* any heading.

# Karen Guide

Karen is an **assistant** platform.
It keeps `memory`.

## Install

- Download the [binary](https://example.com).
- Run it:
  1. once
  2. twice
- [x] done task

```sh
karen serve --port 8080
```

> Quoted advice
> on two lines.

| Option | Default |
|--------|---------|
| port   | 8080    |

### Linux &amp; macOS

Text with a footnote[^1].

[^1]: The footnote.

<div>raw html is skipped</div>

# Second Top Heading
"#;

#[test]
fn headings_paragraphs_lists_code_quotes_and_tables_are_found() {
    let document = extract(DocumentFormat::Markdown, GUIDE.as_bytes());
    assert_eq!(document.title.as_deref(), Some("Karen Guide"));
    assert_eq!(
        document.blocks,
        vec![
            paragraph("Intro before any heading."),
            heading(1, "Karen Guide"),
            paragraph("Karen is an assistant platform. It keeps memory."),
            heading(2, "Install"),
            paragraph("Download the binary."),
            paragraph("Run it:"),
            paragraph("once"),
            paragraph("twice"),
            paragraph("[x] done task"),
            paragraph("karen serve --port 8080"),
            paragraph("Quoted advice on two lines."),
            paragraph("Option | Default"),
            paragraph("port | 8080"),
            heading(3, "Linux & macOS"),
            paragraph("Text with a footnote[^1]."),
            paragraph("The footnote."),
            heading(1, "Second Top Heading"),
        ]
    );
}

#[test]
fn a_document_without_level_one_heading_has_no_title() {
    let document = extract(DocumentFormat::Markdown, b"## Only a section\n\nBody.");
    assert_eq!(document.title, None);
    assert_eq!(
        document.blocks,
        vec![heading(2, "Only a section"), paragraph("Body.")]
    );
}

#[test]
fn invalid_utf8_and_markup_without_text_are_refused() {
    let message = refusal(DocumentParser::new().extract(DocumentFormat::Markdown, b"# Caf\xE9"));
    assert!(
        message.contains("Markdown file is not valid UTF-8"),
        "{message}"
    );
    let message =
        refusal(DocumentParser::new().extract(DocumentFormat::Markdown, b"---\n\n***\n<!-- -->\n"));
    assert_eq!(message, "the file contains no text");
}
