//! One chat turn: store the user's message, send the conversation to the
//! model, store the answer and meter the call. Streaming turns run in their own
//! task, so the answer is stored (marked interrupted) even when the client
//! goes away, and the upstream request is cancelled at once when it does.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use karen_domain::chat::{
    MessageStatus, StoredMessage, UsageStatus, parse_message_text, parse_model_name,
};
use karen_domain::permission::Permission;
use karen_domain::ports::{
    ChatEvent, ChatMessage, ChatRequest, ChatRole, ChatStream, LlmError, RoutedModel, TokenUsage,
    ToolCall,
};
use karen_domain::{ConversationId, Error, MessageId, Result, TenantContext};
use tokio::sync::mpsc;

use super::conversations::own_conversation;
use crate::Deps;

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
}

/// The chat service.
#[derive(Clone)]
pub struct ChatService {
    deps: Arc<Deps>,
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
        other => Error::Upstream(other.to_string()),
    }
}

impl ChatService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Stores the user's message and builds the model request.
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
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let mut conversation = own_conversation(&mut *tx, ctx, id).await?;
        let persona = match conversation.persona_id {
            Some(persona) => tx.personas().persona(persona).await?,
            None => None,
        };
        let history = tx
            .conversations()
            .recent_messages(id, self.deps.assistant.history_messages)
            .await?;
        // Resolve the model first: a refused model stores nothing.
        let model = requested
            .or_else(|| persona.as_ref().and_then(|p| p.model.clone()))
            .unwrap_or_else(|| self.deps.router.default_model());
        let route = self.deps.router.route(ctx.tenant_id(), &model).await?;
        let now = self.deps.clock.now();
        let user_message = StoredMessage {
            id: MessageId::generate(),
            tenant_id: ctx.tenant_id(),
            conversation_id: id,
            role: ChatRole::User,
            content: content.clone(),
            tool_calls: Vec::new(),
            status: MessageStatus::Complete,
            model: None,
            provider: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            created_at: now,
        };
        tx.conversations().insert_message(&user_message).await?;
        conversation.last_activity_at = now;
        tx.conversations()
            .update_conversation(&conversation)
            .await?;
        tx.commit().await?;

        let mut messages = Vec::with_capacity(history.len() + 2);
        if let Some(prompt) = persona
            .as_ref()
            .map(|p| p.system_prompt.as_str())
            .filter(|p| !p.trim().is_empty())
        {
            messages.push(ChatMessage::text(ChatRole::System, prompt));
        }
        messages.extend(history.iter().filter_map(to_chat));
        messages.push(ChatMessage::text(ChatRole::User, content));
        let request = ChatRequest {
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
        Ok(Prepared {
            ctx: ctx.clone(),
            conversation: id,
            user_message,
            request,
            route,
            model,
        })
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
        let started = Instant::now();
        let outcome = prepared.route.provider.complete(&prepared.request).await;
        match outcome {
            Ok(response) => {
                let text = response.message.content.clone().unwrap_or_default();
                let usage = response
                    .usage
                    .unwrap_or_else(|| self.count_locally(&prepared.request, &text));
                let answer = self
                    .finish(
                        &prepared,
                        text,
                        response.message.tool_calls,
                        MessageStatus::Complete,
                        usage,
                        started,
                    )
                    .await?;
                Ok(TurnResult {
                    user_message: prepared.user_message,
                    answer,
                    usage,
                    finish_reason: response.finish_reason,
                })
            }
            Err(error) => {
                let usage = self.count_locally(&prepared.request, "");
                self.finish(
                    &prepared,
                    String::new(),
                    Vec::new(),
                    MessageStatus::Failed,
                    usage,
                    started,
                )
                .await?;
                Err(upstream_error(&error))
            }
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
                let usage = self.count_locally(&prepared.request, "");
                self.finish(
                    &prepared,
                    String::new(),
                    Vec::new(),
                    MessageStatus::Failed,
                    usage,
                    started,
                )
                .await?;
                return Err(upstream_error(&error));
            }
        };
        let (sender, receiver) = mpsc::channel(64);
        let service = self.clone();
        tokio::spawn(async move { service.pump(prepared, upstream, sender, started).await });
        Ok(receiver)
    }

    /// Forwards upstream events to the client until the end, an error, or the
    /// client leaving; then stores what was generated.
    async fn pump(
        &self,
        prepared: Prepared,
        mut upstream: ChatStream,
        sender: mpsc::Sender<TurnEvent>,
        started: Instant,
    ) {
        let mut text = String::new();
        let mut reported: Option<TokenUsage> = None;
        let mut finish_reason = None;
        let mut failure: Option<LlmError> = None;
        let mut client_left = false;
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
                }
                Some(Ok(ChatEvent::Delta { .. })) => {}
                Some(Ok(ChatEvent::Finish {
                    finish_reason: reason,
                    usage,
                    ..
                })) => {
                    finish_reason = reason;
                    reported = usage;
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
        let status = match (&failure, client_left) {
            (Some(_), _) => MessageStatus::Failed,
            (None, true) => MessageStatus::Interrupted,
            (None, false) => MessageStatus::Complete,
        };
        let usage = reported.unwrap_or_else(|| self.count_locally(&prepared.request, &text));
        let stored = self
            .finish(&prepared, text, Vec::new(), status, usage, started)
            .await;
        let event = match (stored, failure) {
            (Ok(message), None) => TurnEvent::Done {
                message_id: message.id,
                usage,
                finish_reason,
                model: prepared.model.clone(),
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
        if !client_left {
            let _ = sender.send(event).await;
        } else {
            tracing::info!(conversation_id = %prepared.conversation, "client left mid-answer; stored as interrupted");
        }
    }

    fn count_locally(&self, request: &ChatRequest, answer: &str) -> TokenUsage {
        super::count_locally(request, answer)
    }

    /// Stores the answer, its usage record and the conversation's activity in
    /// one transaction: a call that happened is never missing from the meter.
    async fn finish(
        &self,
        prepared: &Prepared,
        text: String,
        tool_calls: Vec<ToolCall>,
        status: MessageStatus,
        usage: TokenUsage,
        started: Instant,
    ) -> Result<StoredMessage> {
        let now = self.deps.clock.now();
        let answer = StoredMessage {
            id: MessageId::generate(),
            tenant_id: prepared.ctx.tenant_id(),
            conversation_id: prepared.conversation,
            role: ChatRole::Assistant,
            content: text,
            tool_calls,
            status,
            model: Some(prepared.model.clone()),
            provider: Some(prepared.route.provider.name().to_owned()),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            created_at: now,
        };
        let record = super::usage_record(
            &self.deps,
            &prepared.ctx,
            Some(prepared.conversation),
            prepared.route.provider.name(),
            &prepared.model,
            usage,
            match status {
                MessageStatus::Complete => UsageStatus::Ok,
                MessageStatus::Interrupted => UsageStatus::Interrupted,
                MessageStatus::Failed => UsageStatus::Error,
            },
            started,
        );
        let mut tx = self.deps.store.tenant(prepared.ctx.scope()).await?;
        tx.conversations().insert_message(&answer).await?;
        tx.usage().insert_usage(&record).await?;
        if let Some(mut conversation) = tx
            .conversations()
            .conversation(prepared.conversation)
            .await?
        {
            conversation.last_activity_at = now;
            tx.conversations()
                .update_conversation(&conversation)
                .await?;
        }
        tx.commit().await?;
        Ok(answer)
    }
}
