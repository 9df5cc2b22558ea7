//! The offline provider: what answers in embedded mode when no model is
//! configured and there is no network.
//!
//! It is honest about what it is. It never generates text and never pretends
//! to be a language model: its answer quotes what Karen retrieved for the
//! question (memories, document passages) with their sources, and says
//! plainly when there is nothing to quote. Its model id says so too.

use std::collections::BTreeSet;

use async_trait::async_trait;
use karen_domain::ports::{
    ChatEvent, ChatMessage, ChatProvider, ChatRequest, ChatResponse, ChatRole, ChatStream,
    ContextItem, LlmError, TokenUsage,
};

use karen_domain::words::content_terms;

use crate::tokens::{estimate_prompt_tokens, estimate_tokens};

pub use karen_domain::ports::OFFLINE_MODEL_ID;

const INTRODUCTION: &str = "From what I have stored for you:";

const OFFLINE_NOTE: &str = "(This is Karen's offline mode, not a language model: the passages \
     above are quoted from your stored memories and documents. Configure a model provider to \
     get generated answers.)";

const NOTHING_STORED: &str = "I have no stored memories or documents relevant to your question. \
     This is Karen's offline mode, not a language model, so I can only quote what you have \
     stored. Configure a model provider to get generated answers.";

/// Longest excerpt quoted from one item, in characters.
const MAX_EXCERPT_CHARS: usize = 400;

/// Most items quoted in one answer; retrieval ranks them, so the first are the best.
const MAX_ITEMS: usize = 12;

/// Words per streamed chunk.
const WORDS_PER_CHUNK: usize = 6;

/// Answers only from the request's retrieved context; deterministic.
#[derive(Debug, Clone)]
pub struct OfflineProvider {
    name: String,
}

impl OfflineProvider {
    /// An offline provider reporting `name` in logs and usage records.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// The answer text and finish reason for `request`.
    fn answer(&self, request: &ChatRequest) -> (String, &'static str) {
        let text = compose(request);
        match request.max_tokens {
            Some(limit) if estimate_tokens(&text) > limit => {
                (cut_to_tokens(&text, limit), "length")
            }
            _ => (text, "stop"),
        }
    }

    fn usage(request: &ChatRequest, answer: &str) -> TokenUsage {
        // Karen offers the context in the messages too (`offer_context`), so
        // counting the messages counts it once.
        TokenUsage {
            prompt_tokens: estimate_prompt_tokens(&request.messages),
            completion_tokens: estimate_tokens(answer),
            reported: false,
        }
    }
}

impl Default for OfflineProvider {
    fn default() -> Self {
        Self::new("offline")
    }
}

#[async_trait]
impl ChatProvider for OfflineProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let (text, finish_reason) = self.answer(request);
        let usage = Self::usage(request, &text);
        Ok(ChatResponse {
            provider: None,
            id: None,
            model: OFFLINE_MODEL_ID.into(),
            message: ChatMessage::text(ChatRole::Assistant, text),
            finish_reason: Some(finish_reason.into()),
            usage: Some(usage),
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let (text, finish_reason) = self.answer(request);
        let usage = Self::usage(request, &text);
        let mut events: Vec<Result<ChatEvent, LlmError>> = word_groups(&text, WORDS_PER_CHUNK)
            .into_iter()
            .map(|chunk| {
                Ok(ChatEvent::Delta {
                    content: Some(chunk),
                    tool_calls: Vec::new(),
                })
            })
            .collect();
        events.push(Ok(ChatEvent::Finish {
            provider: None,
            finish_reason: Some(finish_reason.into()),
            usage: Some(usage),
            model: Some(OFFLINE_MODEL_ID.into()),
        }));
        Ok(Box::pin(futures::stream::iter(events)))
    }

    async fn models(&self) -> Result<Vec<String>, LlmError> {
        Ok(vec![OFFLINE_MODEL_ID.into()])
    }
}

/// The whole answer: the quoted items with their sources, or the plain
/// statement that nothing relevant is stored.
fn compose(request: &ChatRequest) -> String {
    let question = request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == ChatRole::User)
        .and_then(|message| message.content.as_deref())
        .unwrap_or_default();
    let terms = content_terms(question);
    let mut seen = BTreeSet::new();
    let items: Vec<&ContextItem> = request
        .context
        .iter()
        .filter(|item| !item.text.trim().is_empty())
        .filter(|item| seen.insert(collapse_whitespace(&item.text)))
        .collect();
    if items.is_empty() {
        return NOTHING_STORED.into();
    }
    let mut answer = format!("{INTRODUCTION}\n");
    for item in items.iter().take(MAX_ITEMS) {
        let source = collapse_whitespace(&item.source);
        let source = if source.is_empty() {
            "stored item"
        } else {
            source.as_str()
        };
        answer.push_str(&format!(
            "\n- {} (source: {source})",
            excerpt(&item.text, &terms)
        ));
    }
    if items.len() > MAX_ITEMS {
        answer.push_str(&format!(
            "\n\n…and {} more stored items.",
            items.len() - MAX_ITEMS
        ));
    }
    answer.push_str("\n\n");
    answer.push_str(OFFLINE_NOTE);
    answer
}

/// The item itself when short; otherwise its sentences that share the most
/// words with the question, in their original order, within the budget.
fn excerpt(text: &str, question_terms: &BTreeSet<String>) -> String {
    let text = collapse_whitespace(text);
    if text.chars().count() <= MAX_EXCERPT_CHARS {
        return text;
    }
    let sentences = sentences(&text);
    let mut ranked: Vec<(usize, usize)> = sentences
        .iter()
        .enumerate()
        .map(|(position, sentence)| {
            (
                position,
                content_terms(sentence).intersection(question_terms).count(),
            )
        })
        .collect();
    // Only sentences about the question; best first, earlier ones winning
    // ties (they tend to introduce what follows).
    ranked.retain(|(_, score)| *score > 0);
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut chosen = Vec::new();
    let mut length = 0;
    for (position, _score) in ranked {
        let size = sentences[position].chars().count();
        if length + size > MAX_EXCERPT_CHARS {
            continue;
        }
        length += size + 1;
        chosen.push(position);
    }
    if chosen.is_empty() {
        return format!("{}…", cut_at_word(&text, MAX_EXCERPT_CHARS));
    }
    chosen.sort_unstable();
    let mut excerpt = String::new();
    let mut previous: Option<usize> = None;
    for position in chosen {
        match previous {
            None if position > 0 => excerpt.push_str("… "),
            Some(before) if position != before + 1 => excerpt.push_str(" … "),
            Some(_) => excerpt.push(' '),
            None => {}
        }
        excerpt.push_str(sentences[position]);
        previous = Some(position);
    }
    if previous.is_some_and(|last| last + 1 < sentences.len()) {
        excerpt.push_str(" …");
    }
    excerpt
}

/// Sentences end at `.`, `!` or `?` followed by a space.
fn sentences(text: &str) -> Vec<&str> {
    let mut sentences = Vec::new();
    let mut start = 0;
    let mut characters = text.char_indices().peekable();
    while let Some((index, character)) = characters.next() {
        let at_end = matches!(character, '.' | '!' | '?')
            && characters.peek().is_some_and(|(_, next)| *next == ' ');
        if at_end {
            let end = index + character.len_utf8();
            sentences.push(text[start..end].trim());
            start = end;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        sentences.push(rest);
    }
    sentences
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters of `text`, cut at a word boundary when there is one.
fn cut_at_word(text: &str, max: usize) -> &str {
    let end = text
        .char_indices()
        .nth(max)
        .map_or(text.len(), |(index, _)| index);
    let cut = &text[..end];
    match cut.rfind(' ') {
        Some(space) if end < text.len() && space > 0 => cut[..space].trim_end(),
        _ => cut,
    }
}

/// The longest prefix of whole words within `limit` estimated tokens.
fn cut_to_tokens(text: &str, limit: u32) -> String {
    let mut kept = String::new();
    for piece in text.split_inclusive(char::is_whitespace) {
        let candidate = format!("{kept}{piece}");
        if estimate_tokens(&candidate) > limit {
            break;
        }
        kept = candidate;
    }
    kept.trim_end().to_owned()
}

/// `text` in chunks of `words` words, whitespace kept, so that the chunks
/// concatenate to exactly `text`.
fn word_groups(text: &str, words: usize) -> Vec<String> {
    let mut groups = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for piece in text.split_inclusive(char::is_whitespace) {
        current.push_str(piece);
        if piece.chars().any(|c| !c.is_whitespace()) {
            count += 1;
        }
        if count == words {
            groups.push(std::mem::take(&mut current));
            count = 0;
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

#[cfg(test)]
#[path = "offline_tests.rs"]
mod tests;
