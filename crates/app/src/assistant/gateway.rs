//! The OpenAI-compatible gateway: stateless completions for a tenant's own
//! applications (usually with an API key), through the tenant's model routes,
//! metered like every other call. Nothing of the exchange is stored but its
//! usage record.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use karen_domain::chat::{Citation, MessageStatus, UsageStatus, estimate_tokens, parse_model_name};
use karen_domain::permission::Permission;
use karen_domain::ports::{
    ChatEvent, ChatMessage, ChatRequest, ChatResponse, ChatRole, ChatStream, LlmError, RoutedModel,
    TokenUsage,
};
use karen_domain::{Error, MemoryId, Result, TenantContext};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::budgets::{BudgetGuard, CallPlan, Grant};
use super::extraction::{AnsweredTurn, MemoryWriter};
use super::turn::{BUDGET_FINISH_REASON, generative, recall_or_nothing, upstream_error};
use super::{count_locally, usage_record};
use crate::Deps;
use crate::memory::{MemoryServices, Retriever};

/// A completion request in vendor-neutral form; `model` may be an alias.
#[derive(Debug, Clone)]
pub struct GatewayRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    pub stop: Option<Vec<String>>,
    pub user: Option<String>,
}

/// What a streamed completion sends to the client.
#[derive(Debug, Clone)]
pub enum GatewayEvent {
    /// An upstream event (deltas and the finish).
    Chat(ChatEvent),
    /// The metered token counts, after the finish.
    Usage(TokenUsage),
    /// The memories and passages recall offered (only with `chat:recall`; last).
    Citations(Vec<Citation>),
    /// The provider failed after the stream began.
    Failed(String),
}

/// A whole completion and the material recall gave it.
#[derive(Debug, Clone)]
pub struct GatewayAnswer {
    pub response: ChatResponse,
    /// Empty unless the credential carries `chat:recall`.
    pub citations: Vec<Citation>,
}

/// The gateway service.
#[derive(Clone)]
pub struct GatewayService {
    deps: Arc<Deps>,
    guard: BudgetGuard,
    retriever: Retriever,
    writer: MemoryWriter,
}

/// What recall did for a call (with `chat:recall`).
struct Recalled {
    /// The last user message: what was recalled for, and what memories are
    /// extracted from.
    message: String,
    citations: Vec<Citation>,
    memories: Vec<MemoryId>,
    extract: bool,
}

/// A call that passed the budget guard.
struct Planned {
    chat: ChatRequest,
    route: RoutedModel,
    model: String,
    grant: Grant,
    recalled: Option<Recalled>,
}

impl GatewayService {
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

    /// With `chat:recall`: recalls for the last user message and offers the
    /// material to the model.
    async fn recall(
        &self,
        ctx: &TenantContext,
        chat: &mut ChatRequest,
    ) -> Result<Option<Recalled>> {
        if ctx.require(Permission::ChatRecall).is_err() {
            return Ok(None);
        }
        let Some(message) = chat
            .messages
            .iter()
            .rev()
            .find(|m| m.role == ChatRole::User)
            .and_then(|m| m.content.clone())
        else {
            return Ok(None);
        };
        let extract = ctx.require(Permission::MemoryWrite).is_ok() && {
            let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
            let enabled = tx.tenant().await?.settings.memory_extraction;
            tx.commit().await?;
            enabled
        };
        let recall = recall_or_nothing(&self.deps, &self.retriever, ctx, &message).await;
        chat.offer_context(recall.items);
        Ok(Some(Recalled {
            message,
            citations: recall.citations,
            memories: recall.memories,
            extract,
        }))
    }

    /// After an answer: restarts the decay of recalled memories and writes
    /// memories back (only with `chat:recall`).
    fn write_back(&self, ctx: &TenantContext, planned: &Planned, answered_by: Option<&str>) {
        let Some(recalled) = &planned.recalled else {
            return;
        };
        self.writer.spawn(AnsweredTurn {
            ctx: ctx.clone(),
            message: recalled.message.clone(),
            provenance: None,
            recalled: recalled.memories.clone(),
            extract: recalled.extract,
            route: planned.route.clone(),
            generative: generative(answered_by),
            status: MessageStatus::Complete,
        });
    }

    fn citations(planned: &Planned) -> Vec<Citation> {
        planned
            .recalled
            .as_ref()
            .map(|r| r.citations.clone())
            .unwrap_or_default()
    }

    /// The model names (and aliases) the principal's tenant may use.
    pub async fn models(&self, ctx: &TenantContext) -> Result<Vec<String>> {
        ctx.require(Permission::ChatWrite)?;
        self.deps.router.models(ctx.tenant_id()).await
    }

    /// Routes the model and passes the budget guard (nothing is sent upstream on a refusal).
    async fn plan(&self, ctx: &TenantContext, request: GatewayRequest) -> Result<Planned> {
        ctx.require(Permission::ChatWrite)?;
        let model = parse_model_name(&request.model)?;
        if request.messages.is_empty() {
            return Err(Error::invalid(
                Some("messages"),
                "messages must contain at least one message",
            ));
        }
        if request
            .temperature
            .is_some_and(|t| !(0.0..=2.0).contains(&t))
        {
            return Err(Error::invalid(
                Some("temperature"),
                "temperature must be between 0 and 2",
            ));
        }
        if request
            .max_tokens
            .is_some_and(|m| !(1..=1_000_000).contains(&m))
        {
            return Err(Error::invalid(
                Some("max_tokens"),
                "max_tokens must be between 1 and 1000000",
            ));
        }
        let route = self.deps.router.route(ctx.tenant_id(), &model).await?;
        let mut chat = ChatRequest {
            model: route.upstream_model.clone(),
            messages: request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            tools: request.tools,
            tool_choice: request.tool_choice,
            stop: request.stop,
            user: request.user,
            context: Vec::new(),
        };
        let recalled = self.recall(ctx, &mut chat).await?;
        let grant = self
            .guard
            .reserve(CallPlan {
                ctx,
                conversation: None,
                provider: route.provider.name(),
                model: &route.upstream_model,
                prompt_tokens: count_locally(&chat, "").prompt_tokens,
                max_tokens: chat.max_tokens,
                generates: true,
            })
            .await?;
        chat.max_tokens = grant.cap(chat.max_tokens);
        Ok(Planned {
            chat,
            route,
            model,
            grant,
            recalled,
        })
    }

    /// Replaces the reservation with the call's usage record (group-committed).
    async fn settle(
        &self,
        ctx: &TenantContext,
        planned: &Planned,
        usage: TokenUsage,
        status: UsageStatus,
        served_by: Option<&str>,
        started: Instant,
    ) -> Result<()> {
        let record = usage_record(
            &self.deps,
            ctx,
            None,
            served_by.unwrap_or(planned.route.provider.name()),
            &planned.chat.model,
            usage,
            status,
            started,
        );
        // The call is metered, so it is recorded: model and counts, never
        // the prompt or the answer (in the usage writer's transaction).
        let completed = crate::audit::Record::new("chat.completion")
            .target("model", &planned.chat.model)
            .after(&serde_json::json!({
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "status": status.as_str(),
            }));
        self.guard
            .settle_alone(&planned.grant, record, (ctx.scope().actor(), completed))
            .await
    }

    /// One whole completion, metered before it is returned.
    pub async fn complete(
        &self,
        ctx: &TenantContext,
        request: GatewayRequest,
    ) -> Result<GatewayAnswer> {
        let planned = self.plan(ctx, request).await?;
        // Its own task: a client that disconnects does not leave the call unsettled.
        let service = self.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move { service.complete_planned(&ctx, planned).await }.in_current_span())
            .await
            .map_err(|error| Error::internal(format!("completion task: {error}")))?
    }

    async fn complete_planned(
        &self,
        ctx: &TenantContext,
        planned: Planned,
    ) -> Result<GatewayAnswer> {
        let started = Instant::now();
        match planned.route.provider.complete(&planned.chat).await {
            Ok(mut response) => {
                let text = response.message.content.clone().unwrap_or_default();
                let usage = response
                    .usage
                    .unwrap_or_else(|| count_locally(&planned.chat, &text));
                let served_by = response.provider.take();
                self.settle(
                    ctx,
                    &planned,
                    usage,
                    UsageStatus::Ok,
                    served_by.as_deref(),
                    started,
                )
                .await?;
                self.write_back(ctx, &planned, Some(&response.model));
                response.usage = Some(usage);
                let citations = Self::citations(&planned);
                response.model = planned.model;
                Ok(GatewayAnswer {
                    response,
                    citations,
                })
            }
            Err(error) => {
                let usage = count_locally(&planned.chat, "");
                self.settle(ctx, &planned, usage, UsageStatus::Error, None, started)
                    .await?;
                Err(upstream_error(&error))
            }
        }
    }

    /// A streamed completion; fails before any event when no provider answers.
    pub async fn stream(
        &self,
        ctx: &TenantContext,
        request: GatewayRequest,
    ) -> Result<(String, mpsc::Receiver<GatewayEvent>)> {
        let planned = self.plan(ctx, request).await?;
        let started = Instant::now();
        let upstream = match planned.route.provider.stream(&planned.chat).await {
            Ok(stream) => stream,
            Err(error) => {
                let usage = count_locally(&planned.chat, "");
                self.settle(ctx, &planned, usage, UsageStatus::Error, None, started)
                    .await?;
                return Err(upstream_error(&error));
            }
        };
        let (sender, receiver) = mpsc::channel(64);
        let service = self.clone();
        let ctx = ctx.clone();
        let shown = planned.model.clone();
        tokio::spawn(
            async move { service.pump(ctx, planned, upstream, sender, started).await }
                .in_current_span(),
        );
        Ok((shown, receiver))
    }

    async fn pump(
        &self,
        ctx: TenantContext,
        planned: Planned,
        mut upstream: ChatStream,
        sender: mpsc::Sender<GatewayEvent>,
        started: Instant,
    ) {
        let allowance = planned.grant.completion_allowance;
        let mut text = String::new();
        let mut reported = None;
        let mut served_by: Option<String> = None;
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
                Some(Ok(event)) => {
                    match &event {
                        ChatEvent::Delta {
                            content: Some(delta),
                            ..
                        } => text.push_str(delta),
                        ChatEvent::Finish {
                            usage,
                            provider,
                            model,
                            ..
                        } => {
                            reported = *usage;
                            served_by.clone_from(provider);
                            answered_by.clone_from(model);
                        }
                        ChatEvent::Delta { .. } => {}
                    }
                    if sender.send(GatewayEvent::Chat(event)).await.is_err() {
                        client_left = true;
                        break;
                    }
                    // A provider that ignores max_tokens is cut off at the budget.
                    if allowance.is_some_and(|limit| estimate_tokens(&text) > limit) {
                        budget_cut = true;
                        break;
                    }
                }
                Some(Err(error)) => {
                    failure = Some(error);
                    break;
                }
                None => break,
            }
        }
        drop(upstream);
        let usage = reported.unwrap_or_else(|| count_locally(&planned.chat, &text));
        let status = match (&failure, client_left, budget_cut) {
            (Some(_), _, _) => UsageStatus::Error,
            (None, true, _) => UsageStatus::Interrupted,
            (None, false, true) => UsageStatus::BudgetCut,
            (None, false, false) => UsageStatus::Ok,
        };
        let settled = self
            .settle(&ctx, &planned, usage, status, served_by.as_deref(), started)
            .await;
        if let Err(error) = settled {
            tracing::error!(%error, "could not meter a streamed completion");
        }
        if failure.is_none() {
            let answered_by = answered_by.unwrap_or_else(|| planned.chat.model.clone());
            self.write_back(&ctx, &planned, Some(&answered_by));
        }
        if client_left {
            return;
        }
        if budget_cut {
            let finish = ChatEvent::Finish {
                provider: None,
                finish_reason: Some(BUDGET_FINISH_REASON.into()),
                usage: Some(usage),
                model: None,
            };
            let _ = sender.send(GatewayEvent::Chat(finish)).await;
        }
        let last = match failure {
            Some(error) => GatewayEvent::Failed(error.to_string()),
            None => GatewayEvent::Usage(usage),
        };
        let _ = sender.send(last).await;
        let citations = Self::citations(&planned);
        if !citations.is_empty() {
            let _ = sender.send(GatewayEvent::Citations(citations)).await;
        }
    }
}
