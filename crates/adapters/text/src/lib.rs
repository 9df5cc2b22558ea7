//! Full-text indexes behind [`karen_domain::ports::TextIndex`]:
//!
//! - [`EmbeddedTextIndex`] (embedded mode): one tantivy index per tenant, on
//!   disk in the tenant's directory, ranked by BM25.
//! - [`PostgresTextIndex`] (scale-out): PostgreSQL full-text search over the
//!   `text_entries` table, under row-level security.
//!
//! Both treat a query as plain words a user typed: it is split into words by
//! this crate and never handed to a query parser, so quotes, `field:value`,
//! `AND`/`OR`, `*` and parentheses are ordinary words (or ignored punctuation).
//! Access filters are pushed into the query as typed values.

mod embedded;
mod postgres;

pub use embedded::{EmbeddedTextIndex, EmbeddedTextOptions};
pub use postgres::PostgresTextIndex;

use karen_domain::Error;

/// The name both implementations report in errors.
const COMPONENT: &str = "text index";

/// A query keeps at most this many distinct words: a pasted page of text
/// still answers quickly, ranked on its first words.
const MAX_QUERY_TERMS: usize = 64;

/// Only this much of a query is read (bytes, cut at a character boundary).
const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Words longer than this (bytes) are not indexed nor searched: they are
/// almost always base64, hashes or run-together garbage, and would bloat the
/// term dictionary.
const MAX_WORD_BYTES: usize = 40;

fn unavailable(detail: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        component: COMPONENT,
        detail: detail.to_string(),
    }
}

/// The start of `text`, at most `max` bytes, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The words of `text` as both indexes see them: maximal runs of alphanumeric
/// characters (any script), like tantivy's `SimpleTokenizer`; everything else
/// separates words and carries no meaning.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty() && word.len() <= MAX_WORD_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_ignore_query_syntax() {
        let found: Vec<&str> = words(r#"title:"x" AND (a* OR -b) \c 'd' Größe 東京"#).collect();
        assert_eq!(
            found,
            [
                "title", "x", "AND", "a", "OR", "b", "c", "d", "Größe", "東京"
            ]
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
