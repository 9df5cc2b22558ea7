//! One chat turn: store the user's message, send the conversation to the
//! model, store the answer and meter the call. Streaming turns run in their own
//! task, so the answer is stored (marked interrupted) even when the client
//! goes away, and the upstream request is cancelled at once when it does.
//! Every call passes the budget guard first and is settled against it after.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use karen_domain::chat::{
    Citation, MessageStatus, StoredMessage, UsageStatus, estimate_tokens, parse_message_text,
    parse_model_name,
};
use karen_domain::memory::Provenance;
use karen_domain::permission::Permission;
use karen_domain::ports::{
    ChatEvent, ChatMessage, ChatRequest, ChatRole, ChatStream, LlmError, OFFLINE_MODEL_ID,
    RoutedModel, TokenUsage, ToolCall,
};
use karen_domain::{ConversationId, Error, MemoryId, MessageId, Result, TenantContext};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::budgets::{BudgetGuard, CallPlan, Grant};
use super::conversations::own_conversation;
use super::extraction::{AnsweredTurn, MemoryWriter};
use super::{count_locally, usage_record};
use crate::Deps;
use crate::audit::Record;
use crate::memory::{MemoryServices, Retriever, TurnRecall};

/// Finish reason of an answer cut off by a hard budget.
pub const BUDGET_FINISH_REASON: &str = "budget_exceeded";

/// Per-turn choices of the client.
#[derive(Debug, Clone, Default)]
pub struct TurnOptions {
    /// Overrides the persona's (or the default) model.
    pub model: Option<String>,
}

/// A finished (non-streamed) turn.
#[derive(Debug, Clone)]
pub struct TurnResult {
    pub user_message: StoredMessage,
    pub answer: StoredMessage,
    pub usage: TokenUsage,
    pub finish_reason: Option<String>,
}

/// What a streamed turn sends to the client.
#[derive(Debug, Clone)]
pub enum TurnEvent {
    /// More text of the answer.
    Delta(String),
    /// The answer is stored.
    Done {
        message_id: MessageId,
        usage: TokenUsage,
        finish_reason: Option<String>,
        model: String,
        /// The memories and passages the answer was given.
        citations: Vec<Citation>,
    },
    /// The provider failed mid-way; what arrived is stored as failed.
    Failed {
        message_id: MessageId,
        error: String,
    },
}

/// Everything a turn needs once the user's message is stored.
struct Prepared {
    ctx: TenantContext,
    conversation: ConversationId,
    user_message: StoredMessage,
    request: ChatRequest,
    route: RoutedModel,
    model: String,
    grant: Grant,
    citations: Vec<Citation>,
    recalled: Vec<MemoryId>,
    /// Whether memories are written back after the answer.
    extract: bool,
}

/// How a call ended, for the stored answer and its usage record.
struct Outcome {
    text: String,
    tool_calls: Vec<ToolCall>,
    status: MessageStatus,
    usage_status: UsageStatus,
    usage: TokenUsage,
    /// The chain member that answered, when the provider says.
    served_by: Option<String>,
}

/// The chat service.
#[derive(Clone)]
pub struct ChatService {
    deps: Arc<Deps>,
    guard: BudgetGuard,
    retriever: Retriever,
    writer: MemoryWriter,
}

/// Recall for a turn; a failing index degrades the turn to no recall rather
/// than failing it (the answer matters more than its material).
pub(crate) async fn recall_or_nothing(
    deps: &Deps,
    retriever: &Retriever,
    ctx: &TenantContext,
    message: &str,
) -> TurnRecall {
    match retriever
        .recall_for_turn(ctx, message, &deps.search.recall)
        .await
    {
        Ok(recall) => recall,
        Err(error) => {
            tracing::warn!(%error, "recall failed; answering without memories and documents");
            TurnRecall::default()
        }
    }
}

/// Whether an answer came from a language model (not the offline provider).
pub(crate) fn generative(model: Option<&str>) -> bool {
    model.is_some_and(|m| m != OFFLINE_MODEL_ID)
}

fn to_chat(message: &StoredMessage) -> Option<ChatMessage> {
    // A failed answer with no text carries nothing worth resending.
    if message.status == MessageStatus::Failed
        && message.content.is_empty()
        && message.tool_calls.is_empty()
    {
        return None;
    }
    Some(ChatMessage {
        role: message.role,
        content: Some(message.content.clone()),
        tool_calls: message.tool_calls.clone(),
        tool_call_id: None,
        name: None,
    })
}

/// Maps a provider failure to the error the client sees.
pub(crate) fn upstream_error(error: &LlmError) -> Error {
    match error {
        LlmError::Refused(reason) => Error::invalid(Some("model"), reason.clone()),
        // The provider judged the request itself wrong: a client mistake, not a
        // gateway failure (and not worth the client's retry).
        LlmError::Upstream {
            status: 400 | 404 | 413 | 422,
            message,
        } => Error::invalid(
            None,
            format!("the model provider rejected the request: {message}"),
        ),
        other => Error::Upstream(other.to_string()),
    }
}

impl ChatService {
    pub(crate) fn new(deps: Arc<Deps>, memory: &MemoryServices, guard: BudgetGuard) -> Self {
        Self {
            retriever: memory.retriever.clone(),
            writer: MemoryWriter::new(
                deps.clone(),
                memory.memories.clone(),
                memory.retriever.clone(),
                guard.clone(),
            ),
            guard,
            deps,
        }
    }

    /// Builds the model request, passes the budget guard, then stores the
    /// user's message. Nothing is stored when the model or the budget refuses.
    async fn prepare(
        &self,
        ctx: &TenantContext,
        id: ConversationId,
        content: &str,
        options: TurnOptions,
    ) -> Result<Prepared> {
        ctx.require(Permission::ChatWrite)?;
        let content = parse_message_text(content)?;
        let requested = options.model.as_deref().map(parse_model_name).transpose()?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let conversation = own_conversation(&mut *tx, ctx, id).await?;
        let extract = tx.tenant().await?.settings.memory_extraction
            && ctx.require(Permission::MemoryWrite).is_ok();
        let persona = match conversation.persona_id {
            Some(persona) => tx.personas().persona(persona).await?,
            None => None,
        };
        let history = tx
            .conversations()
            .recent_messages(id, self.deps.assistant.history_messages)
            .await?;
        tx.commit().await?;
        let model = requested
            .or_else(|| persona.as_ref().and_then(|p| p.model.clone()))
            .unwrap_or_else(|| self.deps.router.default_model());
        // On this route a 404 would read as "no such conversation": an unknown
        // model is a mistake in the request body.
        let route = self
            .deps
            .router
            .route(ctx.tenant_id(), &model)
            .await
            .map_err(|error| match error {
                Error::ModelNotFound(model) => Error::invalid(
                    Some("model"),
                    format!(
                        "the model '{model}' is not available here; GET /v1/models lists the ones you may use"
                    ),
                ),
                other => other,
            })?;
        let mut messages = Vec::with_capacity(history.len() + 2);
        if let Some(prompt) = persona
            .as_ref()
            .map(|p| p.system_prompt.as_str())
            .filter(|p| !p.trim().is_empty())
        {
            messages.push(ChatMessage::text(ChatRole::System, prompt));
        }
        messages.extend(history.iter().filter_map(to_chat));
        messages.push(ChatMessage::text(ChatRole::User, content.clone()));
        let mut request = ChatRequest {
            model: route.upstream_model.clone(),
            messages,
            temperature: persona
                .as_ref()
                .and_then(|p| p.temperature)
                .map(|t| t as f32),
            max_tokens: persona.as_ref().and_then(|p| p.max_tokens),
            tools: None,
            tool_choice: None,
            stop: None,
            user: Some(ctx.principal().user_id.to_string()),
            context: Vec::new(),
        };
        let recall = recall_or_nothing(&self.deps, &self.retriever, ctx, &content).await;
        request.offer_context(recall.items);
        let grant = self
            .guard
            .reserve(CallPlan {
                ctx,
                conversation: Some(id),
                provider: route.provider.name(),
                model: &route.upstream_model,
                prompt_tokens: count_locally(&request, "").prompt_tokens,
                max_tokens: request.max_tokens,
                generates: true,
            })
            .await?;
        request.max_tokens = grant.cap(request.max_tokens);

        let now = self.deps.clock.now();
        let user_message = StoredMessage {
            id: MessageId::generate(),
            tenant_id: ctx.tenant_id(),
            conversation_id: id,
            role: ChatRole::User,
            content,
            tool_calls: Vec::new(),
            status: MessageStatus::Complete,
            model: None,
            provider: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            citations: Vec::new(),
            created_at: now,
        };
        let stored = async {
            let mut tx = self.deps.store.tenant(ctx.scope()).await?;
            tx.conversations().insert_message(&user_message).await?;
            let posted = message_record(&user_message);
            self.deps
                .audit(&mut *tx, ctx.scope().actor(), posted)
                .await?;
            // Only the activity time: a rename running meanwhile must not be undone.
            tx.conversations()
                .touch_conversation(conversation.id, now)
                .await?;
            tx.commit().await
        }
        .await;
        if let Err(error) = stored {
            if let Err(release) = self.guard.release(ctx, &grant).await {
                tracing::warn!(error = %release, "could not release a budget reservation");
            }
            return Err(error);
        }
        Ok(Prepared {
            ctx: ctx.clone(),
            conversation: id,
            user_message,
            request,
            route,
            model,
            grant,
            citations: recall.citations,
            recalled: recall.memories,
            extract,
        })
    }

    /// Restarts the decay of what was recalled and writes memories back, in
    /// the background.
    fn write_back(&self, prepared: &Prepared, status: MessageStatus, answered_by: Option<&str>) {
        self.writer.spawn(AnsweredTurn {
            ctx: prepared.ctx.clone(),
            message: prepared.user_message.content.clone(),
            provenance: Some(Provenance {
                conversation_id: prepared.conversation,
                message_id: Some(prepared.user_message.id),
            }),
            recalled: prepared.recalled.clone(),
            extract: prepared.extract,
            route: prepared.route.clone(),
            generative: generative(answered_by),
            status,
        });
    }

    /// Runs a turn and returns the whole answer.
    pub async fn send(
        &self,
        ctx: &TenantContext,
        id: ConversationId,
        content: &str,
        options: TurnOptions,
    ) -> Result<TurnResult> {
        let prepared = self.prepare(ctx, id, content, options).await?;
        // The call runs in its own task: a client that disconnects does not
        // abandon it half-way (its answer and usage are still stored).
        let service = self.clone();
        tokio::spawn(async move { service.complete_prepared(prepared).await }.in_current_span())
            .await
            .map_err(|error| Error::internal(format!("chat task: {error}")))?
    }

    async fn complete_prepared(&self, prepared: Prepared) -> Result<TurnResult> {
        let started = Instant::now();
        match prepared.route.provider.complete(&prepared.request).await {
            Ok(response) => {
                let text = response.message.content.clone().unwrap_or_default();
                let usage = response
                    .usage
                    .unwrap_or_else(|| count_locally(&prepared.request, &text));
                let outcome = Outcome {
                    text,
                    tool_calls: response.message.tool_calls,
                    status: MessageStatus::Complete,
                    usage_status: UsageStatus::Ok,
                    usage,
                    served_by: response.provider,
                };
                let answer = self.finish(&prepared, outcome, started).await?;
                self.write_back(&prepared, answer.status, Some(&response.model));
                Ok(TurnResult {
                    user_message: prepared.user_message,
                    answer,
                    usage,
                    finish_reason: response.finish_reason,
                })
            }
            Err(error) => {
                self.finish(&prepared, Self::failure(&prepared.request), started)
                    .await?;
                Err(upstream_error(&error))
            }
        }
    }

    fn failure(request: &ChatRequest) -> Outcome {
        Outcome {
            text: String::new(),
            tool_calls: Vec::new(),
            status: MessageStatus::Failed,
            usage_status: UsageStatus::Error,
            usage: count_locally(request, ""),
            served_by: None,
        }
    }

    /// Starts a streamed turn. Fails before any event when the provider cannot
    /// be reached; afterwards the receiver yields deltas and a final event.
    pub async fn stream(
        &self,
        ctx: &TenantContext,
        id: ConversationId,
        content: &str,
        options: TurnOptions,
    ) -> Result<mpsc::Receiver<TurnEvent>> {
        let prepared = self.prepare(ctx, id, content, options).await?;
        let started = Instant::now();
        let upstream = match prepared.route.provider.stream(&prepared.request).await {
            Ok(stream) => stream,
            Err(error) => {
                self.finish(&prepared, Self::failure(&prepared.request), started)
                    .await?;
                return Err(upstream_error(&error));
            }
        };
        let (sender, receiver) = mpsc::channel(64);
        let service = self.clone();
        tokio::spawn(
            async move { service.pump(prepared, upstream, sender, started).await }
                .in_current_span(),
        );
        Ok(receiver)
    }

    /// Forwards upstream events to the client until the end, an error, the
    /// client leaving or the budget running out; then stores what was generated.
    async fn pump(
        &self,
        prepared: Prepared,
        mut upstream: ChatStream,
        sender: mpsc::Sender<TurnEvent>,
        started: Instant,
    ) {
        let allowance = prepared.grant.completion_allowance;
        let mut text = String::new();
        let mut reported: Option<TokenUsage> = None;
        let mut finish_reason = None;
        let mut served_by = None;
        let mut answered_by: Option<String> = None;
        let mut failure: Option<LlmError> = None;
        let mut client_left = false;
        let mut budget_cut = false;
        loop {
            let event = tokio::select! {
                () = sender.closed() => { client_left = true; break; }
                event = upstream.next() => event,
            };
            match event {
                Some(Ok(ChatEvent::Delta {
                    content: Some(delta),
                    ..
                })) => {
                    text.push_str(&delta);
                    if sender.send(TurnEvent::Delta(delta)).await.is_err() {
                        client_left = true;
                        break;
                    }
                    // A provider that ignores max_tokens is cut off at the budget.
                    if allowance.is_some_and(|limit| estimate_tokens(&text) > limit) {
                        budget_cut = true;
                        break;
                    }
                }
                Some(Ok(ChatEvent::Delta { .. })) => {}
                Some(Ok(ChatEvent::Finish {
                    finish_reason: reason,
                    usage,
                    provider,
                    model,
                })) => {
                    finish_reason = reason;
                    reported = usage;
                    served_by = provider;
                    answered_by = model;
                }
                Some(Err(error)) => {
                    failure = Some(error);
                    break;
                }
                None => break,
            }
        }
        // Dropping the stream cancels the upstream request if it is still running.
        drop(upstream);
        let (status, usage_status) = match (&failure, client_left, budget_cut) {
            (Some(_), _, _) => (MessageStatus::Failed, UsageStatus::Error),
            (None, true, _) => (MessageStatus::Interrupted, UsageStatus::Interrupted),
            (None, false, true) => (MessageStatus::Interrupted, UsageStatus::BudgetCut),
            (None, false, false) => (MessageStatus::Complete, UsageStatus::Ok),
        };
        if budget_cut {
            finish_reason = Some(BUDGET_FINISH_REASON.to_owned());
        }
        let usage = reported.unwrap_or_else(|| count_locally(&prepared.request, &text));
        let outcome = Outcome {
            text,
            tool_calls: Vec::new(),
            status,
            usage_status,
            usage,
            served_by,
        };
        let stored = self.finish(&prepared, outcome, started).await;
        if let Ok(message) = &stored {
            // A stream that names no model came from the turn's upstream model.
            let answered_by = answered_by.unwrap_or_else(|| prepared.route.upstream_model.clone());
            self.write_back(&prepared, message.status, Some(&answered_by));
        }
        let event = match (stored, failure) {
            (Ok(message), None) => TurnEvent::Done {
                message_id: message.id,
                usage,
                finish_reason,
                model: prepared.model.clone(),
                citations: message.citations,
            },
            (Ok(message), Some(error)) => TurnEvent::Failed {
                message_id: message.id,
                error: error.to_string(),
            },
            (Err(error), _) => {
                tracing::error!(%error, conversation_id = %prepared.conversation, "could not store a streamed answer");
                return;
            }
        };
        if client_left {
            tracing::info!(conversation_id = %prepared.conversation, "client left mid-answer; stored as interrupted");
        } else {
            let _ = sender.send(event).await;
        }
    }

    /// Stores the answer, its usage record (replacing the budget reservation)
    /// and the conversation's activity in one transaction: a call that
    /// happened is never missing from the meter.
    async fn finish(
        &self,
        prepared: &Prepared,
        outcome: Outcome,
        started: Instant,
    ) -> Result<StoredMessage> {
        let now = self.deps.clock.now();
        let provider = outcome
            .served_by
            .as_deref()
            .unwrap_or(prepared.route.provider.name());
        let answer = StoredMessage {
            id: MessageId::generate(),
            tenant_id: prepared.ctx.tenant_id(),
            conversation_id: prepared.conversation,
            role: ChatRole::Assistant,
            content: outcome.text,
            tool_calls: outcome.tool_calls,
            status: outcome.status,
            model: Some(prepared.route.upstream_model.clone()),
            provider: Some(provider.to_owned()),
            prompt_tokens: outcome.usage.prompt_tokens,
            completion_tokens: outcome.usage.completion_tokens,
            citations: prepared.citations.clone(),
            created_at: now,
        };
        let record = usage_record(
            &self.deps,
            &prepared.ctx,
            Some(prepared.conversation),
            provider,
            &prepared.route.upstream_model,
            outcome.usage,
            outcome.usage_status,
            started,
        );
        let mut tx = self.deps.store.tenant(prepared.ctx.scope()).await?;
        tx.conversations().insert_message(&answer).await?;
        let answered = message_record(&answer);
        self.deps
            .audit(&mut *tx, prepared.ctx.scope().actor(), answered)
            .await?;
        BudgetGuard::settle(&mut *tx, &prepared.grant, &record).await?;
        tx.conversations()
            .touch_conversation(prepared.conversation, now)
            .await?;
        tx.commit().await?;
        Ok(answer)
    }
}

/// The audit event of a stored message (`message.create`): who posted it, or
/// on whose behalf the assistant answered, where, and how it ended; never
/// its content.
fn message_record(message: &StoredMessage) -> Record {
    Record::new("message.create")
        .target("message", message.id)
        .after(&serde_json::json!({
            "conversation_id": message.conversation_id.to_string(),
            "role": message.role.as_str(),
            "status": message.status.as_str(),
            "model": message.model,
        }))
}
