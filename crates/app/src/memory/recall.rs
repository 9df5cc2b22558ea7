//! Recall for a chat turn: the user's most relevant memories and the
//! tenant's most relevant passages (those the user may read), within a token
//! budget, numbered as the prompt cites them.

use karen_domain::chat::{Citation, CitedSource, estimate_tokens};
use karen_domain::documents::HEADING_PATH_SEPARATOR;
use karen_domain::permission::Permission;
use karen_domain::ports::{ContextItem, EntryKind};
use karen_domain::{MemoryId, Result, TenantContext};

use super::Retriever;

/// How much a turn recalls (from `[memory.recall]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RecallPolicy {
    /// Most memories offered to the model.
    pub memories: usize,
    /// Most document passages offered to the model.
    pub passages: usize,
    /// Most tokens (estimated) the offered material may take.
    pub token_budget: u32,
    /// Lowest cosine similarity that makes a result relevant on its own
    /// (otherwise it must share a content word with the message).
    pub min_similarity: f32,
}

impl Default for RecallPolicy {
    fn default() -> Self {
        Self {
            memories: 5,
            passages: 5,
            token_budget: 1500,
            min_similarity: 0.35,
        }
    }
}

/// What recall offers one turn: the prompt material and its citations, in
/// the same order and numbering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnRecall {
    pub items: Vec<ContextItem>,
    pub citations: Vec<Citation>,
    /// The memories offered (their decay restarts once the turn is answered).
    pub memories: Vec<MemoryId>,
}

impl TurnRecall {
    fn offer(&mut self, label: String, text: &str, source: CitedSource, score: f64) {
        let marker = u32::try_from(self.items.len() + 1).unwrap_or(u32::MAX);
        self.items.push(ContextItem {
            source: format!("[{marker}] {label}"),
            text: text.to_owned(),
        });
        self.citations.push(Citation {
            marker,
            source,
            score,
        });
    }
}

impl Retriever {
    /// Recalls material for a message: memories when the principal may read
    /// memories, passages when it may read documents; best first, memories
    /// before passages, cut to the policy's counts and token budget.
    pub async fn recall_for_turn(
        &self,
        ctx: &TenantContext,
        message: &str,
        policy: &RecallPolicy,
    ) -> Result<TurnRecall> {
        let memory_limit = if ctx.require(Permission::MemoryRead).is_ok() {
            policy.memories
        } else {
            0
        };
        let passage_limit = if ctx.require(Permission::DocumentsRead).is_ok() {
            policy.passages
        } else {
            0
        };
        let mut kinds = Vec::new();
        if memory_limit > 0 {
            kinds.push(EntryKind::Memory);
        }
        if passage_limit > 0 {
            kinds.push(EntryKind::Chunk);
        }
        if kinds.is_empty() || policy.token_budget == 0 {
            return Ok(TurnRecall::default());
        }
        let found = self
            .search(
                ctx,
                message,
                kinds,
                memory_limit,
                passage_limit,
                Some(policy.min_similarity),
            )
            .await?;
        let mut recall = TurnRecall::default();
        let mut budget = policy.token_budget;
        let mut fits = |text: &str| {
            // The marker and label cost a few tokens too.
            let cost = estimate_tokens(text).saturating_add(8);
            let fits = cost <= budget;
            if fits {
                budget -= cost;
            }
            fits
        };
        for recalled in found.memories {
            let memory = recalled.memory;
            if !fits(memory.content.as_str()) {
                continue;
            }
            recall.memories.push(memory.id);
            recall.offer(
                "memory".to_owned(),
                memory.content.as_str(),
                CitedSource::Memory {
                    memory_id: memory.id,
                },
                recalled.score,
            );
        }
        for passage in found.passages {
            if !fits(&passage.text) {
                continue;
            }
            // The title, then the headings under it (a document's first
            // heading is often its title).
            let mut label = vec![passage.document_title.as_str()];
            label.extend(
                passage
                    .heading
                    .iter()
                    .flat_map(|path| path.split(HEADING_PATH_SEPARATOR))
                    .filter(|heading| *heading != passage.document_title),
            );
            let label = label.join(" › ");
            recall.offer(
                label,
                &passage.text,
                CitedSource::Passage {
                    document_id: passage.document_id,
                    chunk_id: passage.chunk_id,
                    document_title: passage.document_title,
                    ordinal: passage.ordinal,
                    heading: passage.heading,
                },
                passage.score,
            );
        }
        Ok(recall)
    }
}
