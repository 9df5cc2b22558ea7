//! Long-term memories: what Karen remembers about a user (private) or a tenant
//! (shared), how memories are ranked when recalled, and the rules that find
//! memories in what a user writes when no language model is at hand.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::values::printable;
use crate::{ConversationId, Error, MemoryId, MessageId, Result, TenantId, UserId};

/// The longest memory, in characters.
pub const MAX_MEMORY_CHARS: usize = 2_000;

/// What a memory records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryKind {
    /// Something true about the user or the organisation.
    Fact,
    /// A like, dislike or way the user wants things done.
    Preference,
    /// Something that happened.
    Episode,
    /// A standing instruction for the assistant.
    Instruction,
}

/// How fast a memory fades when it is not recalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayTier {
    /// Half-life of 3 days.
    Short,
    /// Half-life of 30 days.
    Medium,
    /// Half-life of a year.
    Long,
    /// Never fades.
    Pinned,
}

macro_rules! stored_names {
    ($ty:ident, $what:literal, $($variant:ident => $name:literal),+ $(,)?) => {
        impl $ty {
            /// Every value, in order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stored (and API) name.
            pub const fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }

            /// Parses a name given by a client or read from the store.
            pub fn parse(text: &str) -> Result<Self> {
                match text {
                    $($name => Ok($ty::$variant),)+
                    other => Err(Error::invalid(
                        Some($what),
                        format!(
                            "'{}' is not a {}; use one of: {}",
                            printable(other, 40),
                            $what,
                            [$($name),+].join(", ")
                        ),
                    )),
                }
            }
        }
    };
}

stored_names!(MemoryKind, "kind", Fact => "fact", Preference => "preference", Episode => "episode", Instruction => "instruction");
stored_names!(DecayTier, "tier", Short => "short", Medium => "medium", Long => "long", Pinned => "pinned");

impl DecayTier {
    /// The time after which an unrecalled memory counts half; `None` for pinned.
    pub const fn half_life(self) -> Option<time::Duration> {
        match self {
            DecayTier::Short => Some(time::Duration::days(3)),
            DecayTier::Medium => Some(time::Duration::days(30)),
            DecayTier::Long => Some(time::Duration::days(365)),
            DecayTier::Pinned => None,
        }
    }

    /// The weight (0 to 1) of a memory last used at `since`, seen at `now`.
    pub fn freshness(self, since: OffsetDateTime, now: OffsetDateTime) -> f64 {
        let Some(half_life) = self.half_life() else {
            return 1.0;
        };
        let age = (now - since).as_seconds_f64().max(0.0);
        (-(age / half_life.as_seconds_f64()) * std::f64::consts::LN_2).exp()
    }
}

/// How much a memory matters, 1 (trivia) to 10 (essential).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Importance(u8);

impl Importance {
    pub const MIN: u8 = 1;
    pub const MAX: u8 = 10;

    /// Checks the range.
    pub fn new(value: u8) -> Result<Self> {
        if (Self::MIN..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(Error::invalid(
                Some("importance"),
                format!("importance must be between 1 and 10, not {value}"),
            ))
        }
    }

    /// Clamps any number into the range (for values a model proposed).
    pub fn clamped(value: i64) -> Self {
        Self(value.clamp(i64::from(Self::MIN), i64::from(Self::MAX)) as u8)
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Importance {
    type Error = Error;
    fn try_from(value: u8) -> Result<Self> {
        Self::new(value)
    }
}

impl From<Importance> for u8 {
    fn from(value: Importance) -> u8 {
        value.0
    }
}

/// The text of a memory: trimmed, whitespace collapsed, 1 to
/// [`MAX_MEMORY_CHARS`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemoryText(String);

impl MemoryText {
    pub fn parse(text: &str) -> Result<Self> {
        let normalised = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if normalised.is_empty() {
            return Err(Error::invalid(Some("content"), "a memory cannot be empty"));
        }
        let chars = normalised.chars().count();
        if chars > MAX_MEMORY_CHARS {
            return Err(Error::invalid(
                Some("content"),
                format!("a memory holds at most {MAX_MEMORY_CHARS} characters, not {chars}"),
            ));
        }
        if normalised.chars().any(char::is_control) {
            return Err(Error::invalid(
                Some("content"),
                "a memory cannot contain control characters",
            ));
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What exact duplicates have in common: the text, case-folded. Two
    /// memories with the same dedupe text (and owner) are one memory.
    pub fn dedupe_text(&self) -> String {
        self.0.to_lowercase()
    }
}

impl TryFrom<String> for MemoryText {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::parse(&value)
    }
}

impl From<MemoryText> for String {
    fn from(value: MemoryText) -> String {
        value.0
    }
}

/// Where a memory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub conversation_id: ConversationId,
    pub message_id: Option<MessageId>,
}

/// A stored memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    pub id: MemoryId,
    pub tenant_id: TenantId,
    /// The user it belongs to; `None` for a memory shared by the tenant.
    pub owner: Option<UserId>,
    pub kind: MemoryKind,
    pub content: MemoryText,
    /// Hex SHA-256 of the owner and the dedupe text: equal for exact duplicates.
    pub content_hash: String,
    pub importance: Importance,
    pub tier: DecayTier,
    pub provenance: Option<Provenance>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub last_recalled_at: Option<OffsetDateTime>,
}

impl Memory {
    /// The rank of this memory for a query it matched with `relevance` (0 to
    /// 1), at `now`. Relevance dominates (an irrelevant memory ranks 0 however
    /// important); importance and freshness scale it between half and full.
    pub fn rank(&self, relevance: f64, now: OffsetDateTime) -> f64 {
        let since = self
            .last_recalled_at
            .unwrap_or(self.created_at)
            .max(self.updated_at);
        let importance = f64::from(self.importance.get()) / f64::from(Importance::MAX);
        let freshness = self.tier.freshness(since, now);
        relevance.clamp(0.0, 1.0) * (0.5 + 0.3 * importance + 0.2 * freshness)
    }
}

/// A memory proposed by extraction, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryDraft {
    pub kind: MemoryKind,
    pub content: MemoryText,
    pub importance: Importance,
    pub tier: DecayTier,
}

/// Finds memories in a user's message by rule (what Karen does when no
/// language model is configured): statements about themselves, preferences,
/// explicit "remember that …" requests and standing instructions. Questions
/// are never memories.
pub fn extract_by_rules(message: &str) -> Vec<MemoryDraft> {
    let mut drafts: Vec<MemoryDraft> = Vec::new();
    for sentence in sentences(message) {
        let Some(draft) = classify_sentence(sentence) else {
            continue;
        };
        if !drafts
            .iter()
            .any(|d| d.content.dedupe_text() == draft.content.dedupe_text())
        {
            drafts.push(draft);
        }
    }
    drafts
}

fn sentences(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(['.', '!', '?', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Rules in order: (lower-case prefix, kind, importance, tier, keep the prefix).
const RULES: &[(&str, MemoryKind, u8, DecayTier, bool)] = &[
    (
        "please remember that ",
        MemoryKind::Fact,
        8,
        DecayTier::Long,
        false,
    ),
    (
        "remember that ",
        MemoryKind::Fact,
        8,
        DecayTier::Long,
        false,
    ),
    (
        "please remember ",
        MemoryKind::Fact,
        8,
        DecayTier::Long,
        false,
    ),
    ("remember ", MemoryKind::Fact, 7, DecayTier::Long, false),
    (
        "always ",
        MemoryKind::Instruction,
        8,
        DecayTier::Pinned,
        true,
    ),
    (
        "never ",
        MemoryKind::Instruction,
        8,
        DecayTier::Pinned,
        true,
    ),
    (
        "please always ",
        MemoryKind::Instruction,
        8,
        DecayTier::Pinned,
        true,
    ),
    (
        "please never ",
        MemoryKind::Instruction,
        8,
        DecayTier::Pinned,
        true,
    ),
    ("my name is ", MemoryKind::Fact, 9, DecayTier::Pinned, true),
    ("call me ", MemoryKind::Preference, 8, DecayTier::Long, true),
    (
        "i prefer ",
        MemoryKind::Preference,
        6,
        DecayTier::Long,
        true,
    ),
    ("i like ", MemoryKind::Preference, 5, DecayTier::Long, true),
    ("i love ", MemoryKind::Preference, 6, DecayTier::Long, true),
    ("i enjoy ", MemoryKind::Preference, 5, DecayTier::Long, true),
    ("i hate ", MemoryKind::Preference, 6, DecayTier::Long, true),
    (
        "i dislike ",
        MemoryKind::Preference,
        6,
        DecayTier::Long,
        true,
    ),
    (
        "i don't like ",
        MemoryKind::Preference,
        6,
        DecayTier::Long,
        true,
    ),
    (
        "i do not like ",
        MemoryKind::Preference,
        6,
        DecayTier::Long,
        true,
    ),
    (
        "i'm allergic to ",
        MemoryKind::Fact,
        9,
        DecayTier::Pinned,
        true,
    ),
    (
        "i am allergic to ",
        MemoryKind::Fact,
        9,
        DecayTier::Pinned,
        true,
    ),
    ("i work ", MemoryKind::Fact, 7, DecayTier::Long, true),
    ("i live ", MemoryKind::Fact, 7, DecayTier::Long, true),
    ("my ", MemoryKind::Fact, 6, DecayTier::Long, true),
    ("i am ", MemoryKind::Fact, 6, DecayTier::Medium, true),
    ("i'm ", MemoryKind::Fact, 6, DecayTier::Medium, true),
    ("i have ", MemoryKind::Fact, 5, DecayTier::Medium, true),
    ("today i ", MemoryKind::Episode, 4, DecayTier::Short, true),
    (
        "yesterday i ",
        MemoryKind::Episode,
        4,
        DecayTier::Short,
        true,
    ),
    ("i just ", MemoryKind::Episode, 4, DecayTier::Short, true),
];

/// Sentences shorter than this (after the prefix) say too little to keep.
const MIN_REST_CHARS: usize = 3;

fn classify_sentence(sentence: &str) -> Option<MemoryDraft> {
    if sentence.ends_with('?') {
        return None;
    }
    let lower = sentence.to_lowercase();
    // "my … is …" says something; "my question" or "my bad" does not.
    for &(prefix, kind, importance, tier, keep_prefix) in RULES {
        let Some(rest) = lower.strip_prefix(prefix) else {
            continue;
        };
        if rest.trim_end_matches(['.', '!']).trim().chars().count() < MIN_REST_CHARS {
            return None;
        }
        if prefix == "my " && !(rest.contains(" is ") || rest.contains(" are ")) {
            return None;
        }
        // Case-folding can change byte lengths; cut the original by characters.
        let skip = if keep_prefix {
            0
        } else {
            prefix.chars().count()
        };
        let original: String = sentence.chars().skip(skip).collect();
        let content = original.trim().trim_end_matches(['.', '!']).trim();
        let content = if keep_prefix {
            content.to_owned()
        } else {
            capitalise(content)
        };
        let content = MemoryText::parse(&content).ok()?;
        return Some(MemoryDraft {
            kind,
            content,
            importance: Importance::clamped(i64::from(importance)),
            tier,
        });
    }
    None
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(10_000 + days)
    }

    fn memory(importance: u8, tier: DecayTier, created: OffsetDateTime) -> Memory {
        Memory {
            id: MemoryId::generate(),
            tenant_id: TenantId::generate(),
            owner: None,
            kind: MemoryKind::Fact,
            content: MemoryText::parse("x").unwrap(),
            content_hash: String::new(),
            importance: Importance::new(importance).unwrap(),
            tier,
            provenance: None,
            created_at: created,
            updated_at: created,
            last_recalled_at: None,
        }
    }

    #[test]
    fn rank_weighs_relevance_importance_and_decay() {
        let now = at(30);
        let fresh = memory(5, DecayTier::Short, at(30));
        let stale = memory(5, DecayTier::Short, at(0));
        let pinned_old = memory(5, DecayTier::Pinned, at(0));
        assert!(fresh.rank(0.8, now) > stale.rank(0.8, now));
        assert_eq!(pinned_old.rank(0.8, now), fresh.rank(0.8, now));
        assert!(
            memory(10, DecayTier::Long, at(0)).rank(0.8, now)
                > memory(2, DecayTier::Long, at(0)).rank(0.8, now)
        );
        assert_eq!(fresh.rank(0.0, now), 0.0);
        // Half-life: after 3 days a short memory is half as fresh.
        let half = DecayTier::Short.freshness(at(0), at(3));
        assert!((half - 0.5).abs() < 1e-9);
        // A recall refreshes.
        let mut recalled = stale.clone();
        recalled.last_recalled_at = Some(at(29));
        assert!(recalled.rank(0.8, now) > stale.rank(0.8, now));
    }

    #[test]
    fn rules_find_statements_not_questions() {
        let drafts = extract_by_rules(
            "My name is Ada Lovelace. Remember that the deploy window is Friday 16:00! \
             What is my name? I prefer answers in French. Always cite sources. ok.",
        );
        let contents: Vec<(&str, MemoryKind)> = drafts
            .iter()
            .map(|d| (d.content.as_str(), d.kind))
            .collect();
        assert_eq!(
            contents,
            vec![
                ("My name is Ada Lovelace", MemoryKind::Fact),
                ("The deploy window is Friday 16:00", MemoryKind::Fact),
                ("I prefer answers in French", MemoryKind::Preference),
                ("Always cite sources", MemoryKind::Instruction),
            ]
        );
        assert!(extract_by_rules("How are you? my bad. Thanks!").is_empty());
        assert!(extract_by_rules("").is_empty());
        // Non-ASCII case folding does not cut a character in half.
        let drafts = extract_by_rules("Remember that İstanbul is lovely.");
        assert_eq!(drafts[0].content.as_str(), "İstanbul is lovely");
    }

    #[test]
    fn values_are_checked() {
        assert!(Importance::new(0).is_err());
        assert!(Importance::new(11).is_err());
        assert_eq!(Importance::clamped(99).get(), 10);
        assert_eq!(MemoryText::parse("  a \n b ").unwrap().as_str(), "a b");
        assert!(MemoryText::parse("   ").is_err());
        assert!(MemoryText::parse(&"x".repeat(MAX_MEMORY_CHARS + 1)).is_err());
        assert_eq!(MemoryKind::parse("fact").unwrap(), MemoryKind::Fact);
        let err = DecayTier::parse("forever").unwrap_err();
        assert!(err.to_string().contains("short, medium, long, pinned"));
    }
}
