//! The tantivy side of an entry: schema, analyzer, documents and queries.
//!
//! Access filters are indexed as exact terms of typed values (kind names,
//! UUIDs, validated role names) and matched with term queries; the user's
//! text only ever reaches the `text` field, through the analyzer.

use std::collections::BTreeSet;

use karen_domain::ports::{EntryKey, EntryKind, SearchFilter, TextEntry};
use karen_domain::{Error, Result};
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value as _,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer,
};
use tantivy::{Index, TantivyDocument, Term};
use uuid::Uuid;

use crate::{MAX_QUERY_BYTES, MAX_QUERY_TERMS, MAX_WORD_BYTES, truncate};

/// The analyzer's registered name. Changing the analyzer means a new name:
/// the schema then differs from the one on disk, and the index is reset and
/// reported as needing a rebuild instead of silently mixing two analyses.
const ANALYZER: &str = "karen_words_en_v1";

/// The `owner` term of an entry visible to the whole tenant (not a UUID, so it
/// cannot collide with a user id).
const NO_OWNER: &str = "-";

/// The fields of a tenant's index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    /// `kind:uuid`, the entry key: deletes go by this term, hits read it back.
    key: Field,
    kind: Field,
    owner: Field,
    /// 1 when `roles` restricts the entry, 0 when the whole tenant may see it.
    restricted: Field,
    roles: Field,
    document: Field,
    text: Field,
}

/// The schema every tenant index has, with its fields.
pub(crate) fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            // Frequencies for BM25; no positions, as queries never match phrases.
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        key: builder.add_text_field("key", STRING | STORED),
        kind: builder.add_text_field("kind", STRING),
        owner: builder.add_text_field("owner", STRING),
        restricted: builder.add_u64_field("restricted", INDEXED),
        roles: builder.add_text_field("roles", STRING),
        document: builder.add_text_field("document", STRING),
        text: builder.add_text_field("text", text_options),
    };
    (builder.build(), fields)
}

/// The analyzer of the `text` field, applied alike to entries and queries:
/// words are maximal alphanumeric runs in any script; overlong words are
/// dropped; then lowercase, accents folded to ASCII where a folding exists
/// (`café` matches `cafe`), and English (Snowball) stemming.
///
/// Why English stemming in a multilingual product: the same analyzer runs on
/// both sides, so stemming a French or German word can only merge it with
/// a few more forms, never make an identical word miss; and it buys English
/// tenants, the majority, plural/tense matching that BM25 needs. No stop words:
/// BM25's IDF already discounts frequent words, and a query made only of them
/// ("to be or not to be", "The Who") should still find its entry.
pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES + 1))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Registers the analyzer on an opened or created index (tantivy keeps only
/// its name on disk).
pub(crate) fn register_analyzer(index: &Index) {
    index.tokenizers().register(ANALYZER, analyzer());
}

fn key_text(key: &EntryKey) -> String {
    key.to_string()
}

fn parse_key(text: &str) -> Result<EntryKey> {
    let (kind, id) = text
        .split_once(':')
        .ok_or_else(|| Error::internal(format!("malformed text index key '{text}'")))?;
    let id = Uuid::parse_str(id)
        .map_err(|e| Error::internal(format!("malformed text index key '{text}': {e}")))?;
    Ok(EntryKey::new(EntryKind::parse(kind)?, id))
}

impl Fields {
    /// The term that identifies `key` (for deletes).
    pub(crate) fn key_term(&self, key: &EntryKey) -> Term {
        Term::from_field_text(self.key, &key_text(key))
    }

    /// The document of an entry.
    pub(crate) fn document(&self, entry: &TextEntry) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.key, key_text(&entry.key));
        doc.add_text(self.kind, entry.key.kind.as_str());
        match entry.access.owner {
            Some(owner) => doc.add_text(self.owner, owner.to_string()),
            None => doc.add_text(self.owner, NO_OWNER),
        }
        doc.add_u64(self.restricted, u64::from(!entry.access.roles.is_empty()));
        for role in &entry.access.roles {
            doc.add_text(self.roles, role.as_str());
        }
        if let Some(document) = entry.access.document {
            doc.add_text(self.document, document.to_string());
        }
        doc.add_text(self.text, &entry.text);
        doc
    }

    /// The key stored in a document.
    pub(crate) fn read_key(&self, doc: &TantivyDocument) -> Result<EntryKey> {
        let text = doc
            .get_first(self.key)
            .and_then(|value| value.as_str())
            .ok_or_else(|| Error::internal("text index document without a key"))?;
        parse_key(text)
    }

    /// The distinct analysed terms of a query, in order of first appearance,
    /// at most [`MAX_QUERY_TERMS`]. The text goes through the analyzer only:
    /// no character of it is query syntax.
    pub(crate) fn query_terms(&self, index: &Index, query: &str) -> Result<Vec<Term>> {
        let mut analyzer = index
            .tokenizer_for_field(self.text)
            .map_err(|e| Error::internal(format!("text index analyzer: {e}")))?;
        let mut stream = analyzer.token_stream(truncate(query, MAX_QUERY_BYTES));
        let mut seen = BTreeSet::new();
        let mut terms = Vec::new();
        while terms.len() < MAX_QUERY_TERMS && stream.advance() {
            let word = stream.token().text.clone();
            if seen.insert(word.clone()) {
                terms.push(Term::from_field_text(self.text, &word));
            }
        }
        Ok(terms)
    }

    /// `(any of the query terms, BM25) AND (the filter, scoring nothing)`.
    pub(crate) fn search_query(&self, terms: Vec<Term>, filter: &SearchFilter) -> Box<dyn Query> {
        let words: Vec<(Occur, Box<dyn Query>)> = terms
            .into_iter()
            .map(|term| {
                let query: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                (Occur::Should, query)
            })
            .collect();
        let access = ConstScoreQuery::new(Box::new(self.filter_query(filter)), 0.0);
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, Box::new(BooleanQuery::new(words))),
            (Occur::Must, Box::new(access)),
        ]))
    }

    /// What `filter` admits, as term queries on typed values (see
    /// [`SearchFilter::admits`]).
    fn filter_query(&self, filter: &SearchFilter) -> BooleanQuery {
        let exact = |term: Term| -> Box<dyn Query> {
            Box::new(TermQuery::new(term, IndexRecordOption::Basic))
        };
        let any_of = |terms: Vec<Term>| -> Box<dyn Query> {
            Box::new(BooleanQuery::new(
                terms
                    .into_iter()
                    .map(|t| (Occur::Should, exact(t)))
                    .collect(),
            ))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !filter.kinds.is_empty() {
            let kinds = filter
                .kinds
                .iter()
                .map(|kind| Term::from_field_text(self.kind, kind.as_str()))
                .collect();
            clauses.push((Occur::Must, any_of(kinds)));
        }
        let owners = vec![
            Term::from_field_text(self.owner, NO_OWNER),
            Term::from_field_text(self.owner, &filter.user.to_string()),
        ];
        clauses.push((Occur::Must, any_of(owners)));
        let mut roles = vec![Term::from_field_u64(self.restricted, 0)];
        roles.extend(
            filter
                .roles
                .iter()
                .map(|role| Term::from_field_text(self.roles, role.as_str())),
        );
        clauses.push((Occur::Must, any_of(roles)));
        BooleanQuery::new(clauses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysed(text: &str) -> Vec<String> {
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }

    #[test]
    fn the_analyzer_stems_folds_and_keeps_other_scripts() {
        assert_eq!(analysed("Running CAFÉS"), ["run", "cafe"]);
        assert_eq!(analysed("東京 Привет"), ["東京", "привет"]);
        assert_eq!(analysed(r#"title:"x" (a*)"#), ["titl", "x", "a"]);
        assert!(analysed(&"x".repeat(MAX_WORD_BYTES + 1)).is_empty());
    }

    #[test]
    fn keys_round_trip() {
        let key = EntryKey::new(EntryKind::Chunk, Uuid::now_v7());
        assert_eq!(parse_key(&key_text(&key)).unwrap(), key);
        assert!(parse_key("nonsense").is_err());
    }
}
