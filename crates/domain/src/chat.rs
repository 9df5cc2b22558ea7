//! Conversations, their messages, personas and usage records.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ports::{ChatRole, ToolCall};
use crate::values::{Label, printable};
use crate::{
    ApiKeyId, ChunkId, ConversationId, DocumentId, Error, MemoryId, MessageId, PersonaId, TenantId,
    UsageId, UserId,
};

/// Longest message a user may send (characters).
pub const MAX_MESSAGE_CHARS: usize = 32_000;
/// Longest persona system prompt (characters).
pub const MAX_SYSTEM_PROMPT_CHARS: usize = 20_000;
/// Longest model name.
pub const MAX_MODEL_CHARS: usize = 200;

/// A conversation of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConversationId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub title: Option<Label>,
    pub persona_id: Option<PersonaId>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub last_activity_at: OffsetDateTime,
}

/// Whether a stored message is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Written in full (a user's message, or an answer that finished).
    Complete,
    /// An answer cut short: the client went away, or a budget ran out mid-stream.
    Interrupted,
    /// The provider failed; the message holds what arrived before, possibly nothing.
    Failed,
}

impl MessageStatus {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Interrupted => "interrupted",
            MessageStatus::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "complete" => Ok(MessageStatus::Complete),
            "interrupted" => Ok(MessageStatus::Interrupted),
            "failed" => Ok(MessageStatus::Failed),
            other => Err(Error::internal(format!(
                "unknown message status '{other}' in store"
            ))),
        }
    }
}

/// Material an answer was given, under the marker the prompt gave it (`[n]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// The number in the marker `[n]` of the prompt (and of the answer, when
    /// the model cites).
    pub marker: u32,
    #[serde(flatten)]
    pub source: CitedSource,
    /// Relevance as recall ranked it, 0 to 1.
    pub score: f64,
}

/// What a citation points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CitedSource {
    /// One of the user's (or the tenant's shared) memories.
    Memory { memory_id: MemoryId },
    /// A passage of a document.
    Passage {
        document_id: DocumentId,
        chunk_id: ChunkId,
        document_title: String,
        /// Position of the passage in the document, from 0.
        ordinal: u32,
        heading: Option<String>,
    },
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    pub role: ChatRole,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub status: MessageStatus,
    /// For answers: the model and provider that produced them.
    pub model: Option<String>,
    pub provider: Option<String>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// For answers: the memories and passages recall put in the prompt.
    pub citations: Vec<Citation>,
    pub created_at: OffsetDateTime,
}

/// Parses the text a user sends.
pub fn parse_message_text(text: &str) -> Result<String, Error> {
    let count = text.chars().count();
    if text.trim().is_empty() {
        return Err(Error::invalid(Some("content"), "content must not be empty"));
    }
    if count > MAX_MESSAGE_CHARS {
        return Err(Error::invalid(
            Some("content"),
            format!("content must be at most {MAX_MESSAGE_CHARS} characters (got {count})"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Error::invalid(
            Some("content"),
            "content must not contain control characters",
        ));
    }
    Ok(text.to_owned())
}

/// Parses a model name (`gpt-4o-mini`, `llama3.1:8b`, an alias…).
pub fn parse_model_name(text: &str) -> Result<String, Error> {
    let trimmed = text.trim();
    let ok = !trimmed.is_empty()
        && trimmed.chars().count() <= MAX_MODEL_CHARS
        && trimmed.chars().all(|c| c.is_ascii_graphic());
    if !ok {
        return Err(Error::invalid(
            Some("model"),
            format!(
                "'{}' is not a model name (1–{MAX_MODEL_CHARS} visible ASCII characters, no spaces)",
                printable(trimmed, 60)
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

/// A named system prompt with model settings; tenant-wide, or one user's own.
#[derive(Debug, Clone, PartialEq)]
pub struct Persona {
    pub id: PersonaId,
    pub tenant_id: TenantId,
    /// `None`: available to everyone in the tenant.
    pub owner: Option<UserId>,
    pub name: Label,
    pub system_prompt: String,
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Checks persona settings.
pub fn validate_persona(
    system_prompt: &str,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
) -> Result<(), Error> {
    let count = system_prompt.chars().count();
    if count > MAX_SYSTEM_PROMPT_CHARS {
        return Err(Error::invalid(
            Some("system_prompt"),
            format!(
                "system_prompt must be at most {MAX_SYSTEM_PROMPT_CHARS} characters (got {count})"
            ),
        ));
    }
    if let Some(t) = temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(Error::invalid(
            Some("temperature"),
            "temperature must be between 0 and 2",
        ));
    }
    if let Some(m) = max_tokens
        && !(1..=200_000).contains(&m)
    {
        return Err(Error::invalid(
            Some("max_tokens"),
            "max_tokens must be between 1 and 200000",
        ));
    }
    Ok(())
}

/// The outcome of a provider call, as metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageStatus {
    Ok,
    /// The provider failed (timeouts, errors); tokens sent are still counted.
    Error,
    /// The client went away mid-stream.
    Interrupted,
    /// A hard budget ran out mid-stream.
    BudgetCut,
}

impl UsageStatus {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            UsageStatus::Ok => "ok",
            UsageStatus::Error => "error",
            UsageStatus::Interrupted => "interrupted",
            UsageStatus::BudgetCut => "budget_cut",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "ok" => Ok(UsageStatus::Ok),
            "error" => Ok(UsageStatus::Error),
            "interrupted" => Ok(UsageStatus::Interrupted),
            "budget_cut" => Ok(UsageStatus::BudgetCut),
            other => Err(Error::internal(format!(
                "unknown usage status '{other}' in store"
            ))),
        }
    }
}

/// One metered provider call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub id: UsageId,
    pub tenant_id: TenantId,
    pub user_id: Option<UserId>,
    pub api_key_id: Option<ApiKeyId>,
    pub conversation_id: Option<ConversationId>,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Whether Karen counted the tokens (the upstream did not report them).
    pub counted_locally: bool,
    pub latency_ms: u32,
    pub status: UsageStatus,
    /// Cost in millionths of the configured currency unit.
    pub cost_micros: i64,
    pub created_at: OffsetDateTime,
}

/// Estimates the tokens of `text` when a provider does not report them: about
/// one token per four ASCII characters, one per other character, never less
/// than one per word.
/// Documented as an estimate wherever it is used (`counted_locally`).
pub fn estimate_tokens(text: &str) -> u32 {
    // ASCII: about four bytes a token; other scripts (CJK, emoji…) about a
    // character a token, which errs high rather than low.
    let (ascii, other) = text.chars().fold((0usize, 0usize), |(a, o), c| {
        if c.is_ascii() { (a + 1, o) } else { (a, o + 1) }
    });
    let estimate = ascii.div_ceil(4) + other;
    let words = text.split_whitespace().count();
    u32::try_from(estimate.max(words)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimates_are_plausible() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("hello"), 2);
        assert!(estimate_tokens(&"word ".repeat(100)) >= 100);
        assert!(estimate_tokens("日本語のテキスト") >= 8);
    }

    #[test]
    fn message_text_and_model_names_are_checked() {
        assert!(parse_message_text("  ").is_err());
        assert!(parse_message_text(&"x".repeat(MAX_MESSAGE_CHARS + 1)).is_err());
        assert!(parse_message_text("line one\nline two\ttab").is_ok());
        assert!(parse_message_text("bell\u{7}").is_err());
        assert!(parse_model_name("llama3.1:8b").is_ok());
        assert!(parse_model_name("gpt 4").is_err());
    }
}
