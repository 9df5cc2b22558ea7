//! Writing memories back after a turn: what the user's message says about
//! them becomes private memories (exact duplicates merge). With a language
//! model behind the turn, the model extracts them (a metered call that
//! passes the budget guard like any other); with the offline provider, or
//! when the model's answer is unusable or the budget refuses, the rules do.
//! A tenant turns it off with `settings.memory_extraction = false`.

use std::sync::Arc;
use std::time::Instant;

use karen_domain::chat::{MessageStatus, UsageStatus};
use karen_domain::extraction::{EXTRACTION_PROMPT, parse_extraction};
use karen_domain::memory::{MemoryDraft, Provenance, extract_by_rules};
use karen_domain::ports::{ChatMessage, ChatRequest, ChatRole, RoutedModel};
use karen_domain::{MemoryId, Result, TenantContext};
use tracing::Instrument as _;

use super::budgets::{BudgetGuard, CallPlan};
use super::{count_locally, usage_record};
use crate::Deps;
use crate::memory::{ExtractionMode, MemoryService, Retriever};

/// The most completion tokens an extraction call may use.
const EXTRACTION_MAX_TOKENS: u32 = 400;

/// What a finished turn leaves for the write-back.
pub(crate) struct AnsweredTurn {
    pub ctx: TenantContext,
    /// The user's message.
    pub message: String,
    pub provenance: Option<Provenance>,
    /// The memories recall offered (their decay restarts).
    pub recalled: Vec<MemoryId>,
    /// Whether to extract memories (the tenant's toggle and the principal's
    /// `memory:write`).
    pub extract: bool,
    /// The route that answered, and whether a language model was behind it
    /// (not the offline provider).
    pub route: RoutedModel,
    pub generative: bool,
    pub status: MessageStatus,
}

/// Runs the write-back of answered turns in the background.
#[derive(Clone)]
pub(crate) struct MemoryWriter {
    deps: Arc<Deps>,
    memories: MemoryService,
    retriever: Retriever,
    guard: BudgetGuard,
}

impl MemoryWriter {
    pub(crate) fn new(
        deps: Arc<Deps>,
        memories: MemoryService,
        retriever: Retriever,
        guard: BudgetGuard,
    ) -> Self {
        Self {
            guard,
            deps,
            memories,
            retriever,
        }
    }

    /// Starts the write-back of `turn` without delaying the answer.
    pub(crate) fn spawn(&self, turn: AnsweredTurn) {
        if turn.status == MessageStatus::Failed {
            return;
        }
        let writer = self.clone();
        // A child of the turn's span, so the write-back shows in the request's trace.
        let span = tracing::info_span!(
            "job",
            otel.name = "job memory_write_back",
            job.name = "memory_write_back"
        );
        tokio::spawn(
            async move {
                if let Err(error) = writer.retriever.touch(&turn.ctx, &turn.recalled).await {
                    tracing::warn!(%error, "could not record recalled memories");
                }
                if turn.extract
                    && writer.deps.search.extraction != ExtractionMode::Off
                    && let Err(error) = writer.write_back(&turn).await
                {
                    tracing::warn!(%error, "could not write memories back after a turn");
                }
            }
            .instrument(span),
        );
    }

    async fn write_back(&self, turn: &AnsweredTurn) -> Result<()> {
        let drafts = if turn.generative && self.deps.search.extraction == ExtractionMode::Auto {
            match self.extract_with_model(turn).await {
                Ok(drafts) => drafts,
                Err(error) => {
                    tracing::info!(%error, "memory extraction by the model failed; using the rules");
                    extract_by_rules(&turn.message)
                }
            }
        } else {
            extract_by_rules(&turn.message)
        };
        self.memories
            .remember_drafts(&turn.ctx, drafts, turn.provenance)
            .await
            .map(drop)
    }

    /// Asks the turn's model for the memories in the message; the call is
    /// metered and budgeted like the turn itself.
    async fn extract_with_model(&self, turn: &AnsweredTurn) -> Result<Vec<MemoryDraft>> {
        let ctx = &turn.ctx;
        let mut request = ChatRequest {
            model: turn.route.upstream_model.clone(),
            messages: vec![
                ChatMessage::text(ChatRole::System, EXTRACTION_PROMPT),
                ChatMessage::text(ChatRole::User, turn.message.clone()),
            ],
            temperature: Some(0.0),
            max_tokens: Some(EXTRACTION_MAX_TOKENS),
            tools: None,
            tool_choice: None,
            stop: None,
            user: Some(ctx.principal().user_id.to_string()),
            context: Vec::new(),
        };
        let conversation = turn.provenance.map(|p| p.conversation_id);
        let grant = self
            .guard
            .reserve(CallPlan {
                ctx,
                conversation,
                provider: turn.route.provider.name(),
                model: &turn.route.upstream_model,
                prompt_tokens: count_locally(&request, "").prompt_tokens,
                max_tokens: request.max_tokens,
                generates: true,
            })
            .await?;
        request.max_tokens = grant.cap(request.max_tokens);
        let started = Instant::now();
        let answer = turn.route.provider.complete(&request).await;
        let (text, usage, status, provider) = match &answer {
            Ok(response) => {
                let text = response.message.content.clone().unwrap_or_default();
                let usage = response
                    .usage
                    .unwrap_or_else(|| count_locally(&request, &text));
                (text, usage, UsageStatus::Ok, response.provider.clone())
            }
            Err(_) => (
                String::new(),
                count_locally(&request, ""),
                UsageStatus::Error,
                None,
            ),
        };
        let provider = provider.unwrap_or_else(|| turn.route.provider.name().to_owned());
        let record = usage_record(
            &self.deps,
            ctx,
            conversation,
            &provider,
            &turn.route.upstream_model,
            usage,
            status,
            started,
        );
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        BudgetGuard::settle(&mut *tx, &grant, &record).await?;
        tx.commit().await?;
        answer.map_err(|error| super::turn::upstream_error(&error))?;
        parse_extraction(&text)
    }
}
