//! Memory extraction by a language model: the instruction Karen sends after
//! a turn and the parser of the model's answer. (Without a model Karen uses
//! the rules of [`crate::memory::extract_by_rules`].)

use serde::Deserialize;

use crate::memory::{DecayTier, Importance, MemoryDraft, MemoryKind, MemoryText};
use crate::{Error, Result};

/// Most memories taken from one message.
pub const MAX_EXTRACTED: usize = 10;

/// The system prompt of an extraction call; the user's message follows as
/// the user turn.
pub const EXTRACTION_PROMPT: &str = "You find what is worth remembering long-term about the user \
in the message they sent to an assistant: facts about themselves, their preferences, notable \
events, and standing instructions for the assistant. Ignore questions, small talk and anything \
only relevant to this one request. Answer with a JSON array only, no prose, each element \
{\"kind\": \"fact\"|\"preference\"|\"episode\"|\"instruction\", \"content\": a short \
self-contained sentence in the third person about the user, \"importance\": 1-10, \
\"tier\": \"short\"|\"medium\"|\"long\"|\"pinned\"}. Answer [] when there is nothing to remember.";

#[derive(Deserialize)]
struct Extracted {
    kind: Option<String>,
    content: Option<String>,
    importance: Option<serde_json::Value>,
    tier: Option<String>,
}

impl Extracted {
    /// The draft, if the element is usable (a bad kind or tier falls back to
    /// fact / long; empty or overlong content drops the element).
    fn draft(self) -> Option<MemoryDraft> {
        let content = MemoryText::parse(self.content?.trim()).ok()?;
        let importance = self
            .importance
            .and_then(|v| v.as_f64())
            .map(|v| v.round().clamp(1.0, 10.0) as u8)
            .unwrap_or(5);
        Some(MemoryDraft {
            kind: self
                .kind
                .and_then(|k| MemoryKind::parse(&k.to_lowercase()).ok())
                .unwrap_or(MemoryKind::Fact),
            content,
            importance: Importance::new(importance).ok()?,
            tier: self
                .tier
                .and_then(|t| DecayTier::parse(&t.to_lowercase()).ok())
                .unwrap_or(DecayTier::Long),
        })
    }
}

/// The memories in a model's answer to [`EXTRACTION_PROMPT`]: the first JSON
/// array in it (models like to wrap it in prose or a code fence). An answer
/// with no array is an error (the caller falls back to the rules); unusable
/// elements are skipped.
pub fn parse_extraction(answer: &str) -> Result<Vec<MemoryDraft>> {
    let unusable = || Error::Upstream("the model's memory extraction was not a JSON array".into());
    let start = answer.find('[').ok_or_else(unusable)?;
    let end = answer.rfind(']').ok_or_else(unusable)?;
    if end < start {
        return Err(unusable());
    }
    let elements: Vec<serde_json::Value> =
        serde_json::from_str(&answer[start..=end]).map_err(|_| unusable())?;
    let mut drafts: Vec<MemoryDraft> = Vec::new();
    for element in elements {
        let Some(draft) = serde_json::from_value::<Extracted>(element)
            .ok()
            .and_then(Extracted::draft)
        else {
            continue;
        };
        if !drafts
            .iter()
            .any(|d| d.content.dedupe_text() == draft.content.dedupe_text())
        {
            drafts.push(draft);
        }
        if drafts.len() == MAX_EXTRACTED {
            break;
        }
    }
    Ok(drafts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_array_out_of_prose_and_fences() {
        let answer = "Sure! ```json\n[{\"kind\": \"Preference\", \"content\": \"The user likes green tea.\", \"importance\": 6.4, \"tier\": \"long\"},\n {\"content\": \"The user lives in Lyon.\"},\n {\"kind\": \"fact\", \"content\": \"  \"},\n {\"content\": \"The user likes green tea.\"}, 7]\n```";
        let drafts = parse_extraction(answer).unwrap();
        assert_eq!(drafts.len(), 2);
        assert_eq!(drafts[0].kind, MemoryKind::Preference);
        assert_eq!(drafts[0].importance, Importance::new(6).unwrap());
        assert_eq!(drafts[1].content.as_str(), "The user lives in Lyon.");
        assert_eq!(drafts[1].kind, MemoryKind::Fact);
        assert_eq!(drafts[1].tier, DecayTier::Long);
        assert!(parse_extraction("[]").unwrap().is_empty());
    }

    #[test]
    fn an_answer_without_an_array_is_an_error() {
        assert!(parse_extraction("Nothing to remember.").is_err());
        assert!(parse_extraction("] then [").is_err());
        assert!(parse_extraction("[{\"content\": ").is_err());
    }
}
