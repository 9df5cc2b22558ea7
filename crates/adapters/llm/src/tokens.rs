//! Local token estimates, used when an upstream does not report usage (and
//! by the offline provider, which has no tokenizer at all).
//!
//! Budgets and billing rely on these counts, so the estimate leans towards
//! counting too many rather than too few. It is a heuristic, not a
//! tokenizer; counts are marked `reported: false` wherever they are used.

use karen_domain::ports::{ChatMessage, TokenUsage};

/// Roughly what a BPE tokenizer spends on each message's role and separators
/// (OpenAI documents 3–4 tokens per message).
const TOKENS_PER_MESSAGE: u32 = 4;

/// Tokens that prime the assistant's reply after the last message.
const TOKENS_PER_REPLY: u32 = 3;

/// Estimates the number of tokens of `text`.
///
/// The heuristic mirrors how BPE vocabularies split text:
/// - a run of ASCII letters costs one token per 5 letters (rounded up):
///   common English words are one token, long or rare words split into
///   several pieces;
/// - a run of digits costs one token per 3 digits (vocabularies group
///   numbers in threes);
/// - every other letter or digit (accented Latin, Cyrillic, CJK…) costs one
///   token, since vocabularies cover non-ASCII text far more sparsely;
/// - every punctuation mark or symbol costs one token;
/// - whitespace is free (it is merged into the next word's token).
///
/// On English prose this gives about 1.3–1.5 tokens per word, slightly
/// above what GPT and Claude tokenizers report.
pub fn estimate_tokens(text: &str) -> u32 {
    let mut tokens: u32 = 0;
    let mut letters: u32 = 0;
    let mut digits: u32 = 0;
    let flush = |tokens: &mut u32, letters: &mut u32, digits: &mut u32| {
        *tokens = tokens
            .saturating_add(letters.div_ceil(5))
            .saturating_add(digits.div_ceil(3));
        *letters = 0;
        *digits = 0;
    };
    for character in text.chars() {
        if character.is_ascii_alphabetic() {
            if digits > 0 {
                flush(&mut tokens, &mut letters, &mut digits);
            }
            letters += 1;
            continue;
        }
        if character.is_ascii_digit() {
            if letters > 0 {
                flush(&mut tokens, &mut letters, &mut digits);
            }
            digits += 1;
            continue;
        }
        flush(&mut tokens, &mut letters, &mut digits);
        if !character.is_whitespace() {
            tokens = tokens.saturating_add(1);
        }
    }
    flush(&mut tokens, &mut letters, &mut digits);
    tokens
}

/// Estimates the prompt tokens of a conversation: each message's text, name
/// and tool calls, plus per-message overhead.
pub fn estimate_prompt_tokens(messages: &[ChatMessage]) -> u32 {
    messages
        .iter()
        .map(|message| {
            let mut tokens = TOKENS_PER_MESSAGE;
            tokens = tokens.saturating_add(message.content.as_deref().map_or(0, estimate_tokens));
            tokens = tokens.saturating_add(message.name.as_deref().map_or(0, estimate_tokens));
            for call in &message.tool_calls {
                tokens = tokens
                    .saturating_add(estimate_tokens(&call.function.name))
                    .saturating_add(estimate_tokens(&call.function.arguments));
            }
            tokens
        })
        .fold(TOKENS_PER_REPLY, u32::saturating_add)
}

/// Usage counted locally for a prompt and the text generated for it.
pub(crate) fn estimated_usage(messages: &[ChatMessage], completion: &str) -> TokenUsage {
    TokenUsage {
        prompt_tokens: estimate_prompt_tokens(messages),
        completion_tokens: estimate_tokens(completion),
        reported: false,
    }
}

#[cfg(test)]
mod tests {
    use karen_domain::ports::{ChatRole, FunctionCall, ToolCall};

    use super::*;

    #[test]
    fn empty_and_whitespace_cost_nothing() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens(" \n\t "), 0);
    }

    #[test]
    fn short_words_are_one_token_and_long_words_split() {
        assert_eq!(estimate_tokens("the cat sat"), 3);
        assert_eq!(estimate_tokens("Hello, world!"), 4);
        assert_eq!(estimate_tokens("internationalization"), 4);
    }

    #[test]
    fn digits_group_in_threes_and_split_from_letters() {
        assert_eq!(estimate_tokens("1234567"), 3);
        assert_eq!(estimate_tokens("gpt4o"), 3);
    }

    #[test]
    fn non_ascii_letters_cost_one_token_each() {
        assert_eq!(estimate_tokens("日本語"), 3);
        assert_eq!(estimate_tokens("café"), 2);
    }

    #[test]
    fn english_prose_costs_somewhat_more_than_one_token_per_word() {
        let text = "Karen is a self-hosted, multi-tenant AI-assistant platform shipped as one \
                    Rust binary. Organisations get chat assistants with long-term memory and \
                    retrieval over their own documents.";
        let words = text.split_whitespace().count() as u32;
        let estimate = estimate_tokens(text);
        assert!(
            estimate >= words * 13 / 10 && estimate <= words * 2,
            "{estimate} for {words}"
        );
    }

    #[test]
    fn prompt_counts_messages_names_and_tool_calls() {
        let mut assistant = ChatMessage::text(ChatRole::Assistant, "");
        assistant.tool_calls.push(ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            },
        });
        let messages = vec![ChatMessage::text(ChatRole::User, "hi"), assistant];
        let plain = estimate_prompt_tokens(&messages[..1]);
        assert_eq!(plain, TOKENS_PER_REPLY + TOKENS_PER_MESSAGE + 1);
        assert!(estimate_prompt_tokens(&messages) > plain + TOKENS_PER_MESSAGE);
    }
}
