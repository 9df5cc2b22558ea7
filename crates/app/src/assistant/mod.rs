//! The assistant: conversations and their messages, personas, chat turns
//! against the tenant's model providers, and usage metering.

mod budgets;
mod conversations;
mod embeddings;
mod extraction;
mod gateway;
mod meter;
mod personas;
mod providers;
mod turn;
mod usage;

use std::sync::Arc;
use std::time::Instant;

use karen_domain::chat::{UsageRecord, UsageStatus, estimate_tokens};
use karen_domain::permission::Permission;
use karen_domain::ports::{ChatRequest, TokenUsage};
use karen_domain::{ConversationId, Subject, TenantContext, UsageId};

pub use budgets::{BudgetService, BudgetStatus, DEFAULT_COMPLETION_ALLOWANCE, NewBudget};
pub use conversations::{ConversationChanges, ConversationPage, ConversationService};
pub use embeddings::{EmbeddingAnswer, EmbeddingRequest, EmbeddingService};
pub use gateway::{GatewayAnswer, GatewayEvent, GatewayRequest, GatewayService};
pub use personas::{PersonaInput, PersonaService};
pub use providers::{ProviderInput, ProviderService};
pub use turn::{BUDGET_FINISH_REASON, ChatService, TurnEvent, TurnOptions, TurnResult};
pub use usage::{UsageQuery, UsageService};

use crate::Deps;

/// What a model call costs, per model (prices in millionths of the currency unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub model: String,
    pub prompt_micros_per_1k: i64,
    pub completion_micros_per_1k: i64,
}

/// Assistant settings (from configuration).
#[derive(Debug, Clone)]
pub struct AssistantPolicy {
    /// How many earlier messages a turn sends as context.
    pub history_messages: i64,
    /// The price table; models not listed cost nothing.
    pub prices: Vec<ModelPrice>,
}

impl Default for AssistantPolicy {
    fn default() -> Self {
        Self {
            history_messages: 40,
            prices: Vec::new(),
        }
    }
}

impl AssistantPolicy {
    /// The cost of a call, from the price table.
    pub fn cost_micros(&self, model: &str, prompt_tokens: u32, completion_tokens: u32) -> i64 {
        self.prices
            .iter()
            .find(|p| p.model == model)
            .map_or(0, |price| {
                let micros = (i128::from(prompt_tokens) * i128::from(price.prompt_micros_per_1k)
                    + i128::from(completion_tokens) * i128::from(price.completion_micros_per_1k))
                    / 1000;
                i64::try_from(micros).unwrap_or(i64::MAX)
            })
    }
}

/// The assistant's services.
#[derive(Clone)]
pub struct AssistantServices {
    pub conversations: ConversationService,
    pub personas: PersonaService,
    pub chat: ChatService,
    pub gateway: GatewayService,
    pub embeddings: EmbeddingService,
    pub usage: UsageService,
    pub budgets: BudgetService,
    pub providers: ProviderService,
    guard: budgets::BudgetGuard,
}

impl AssistantServices {
    pub(crate) fn new(deps: Arc<Deps>, memory: &crate::memory::MemoryServices) -> Self {
        let guard = budgets::BudgetGuard::start(deps.clone());
        Self {
            conversations: ConversationService::new(deps.clone()),
            personas: PersonaService::new(deps.clone()),
            chat: ChatService::new(deps.clone(), memory, guard.clone()),
            gateway: GatewayService::new(deps.clone(), memory, guard.clone()),
            embeddings: EmbeddingService::new(deps.clone(), guard.clone()),
            guard,
            usage: UsageService::new(deps.clone()),
            budgets: BudgetService::new(deps.clone()),
            providers: ProviderService::new(deps),
        }
    }
}

impl AssistantServices {
    /// Commits the usage of calls still queued and stops the usage writer
    /// (on shutdown, after in-flight requests finished).
    pub async fn stop_metering(&self) {
        self.guard.stop().await;
    }

    /// What the OpenAI-compatible `GET /v1/models` lists: the chat models and
    /// aliases (with `chat:write`), then the embedding models (with
    /// `embeddings:create`); `permission_denied` with neither.
    pub async fn openai_models(&self, ctx: &TenantContext) -> karen_domain::Result<Vec<String>> {
        let chat = ctx.require(Permission::ChatWrite);
        let embed = ctx.require(Permission::EmbeddingsCreate).is_ok();
        let mut models = match chat {
            Ok(()) => self.gateway.models(ctx).await?,
            Err(error) if !embed => return Err(error),
            Err(_) => Vec::new(),
        };
        if embed {
            for model in self.embeddings.models(ctx).await? {
                if !models.contains(&model) {
                    models.push(model);
                }
            }
        }
        Ok(models)
    }
}

/// Token counts estimated by Karen when the provider reports none.
pub(crate) fn count_locally(request: &ChatRequest, answer: &str) -> TokenUsage {
    // Everything sent counts: text, tool calls, names and the tool definitions.
    let messages: u32 = request
        .messages
        .iter()
        .map(|m| {
            let calls: u32 = m
                .tool_calls
                .iter()
                .map(|c| estimate_tokens(&c.function.name) + estimate_tokens(&c.function.arguments))
                .sum();
            estimate_tokens(m.content.as_deref().unwrap_or_default())
                + calls
                + m.name.as_deref().map_or(0, estimate_tokens)
                + 4
        })
        .sum();
    let tools = request
        .tools
        .as_ref()
        .map_or(0, |t| estimate_tokens(&t.to_string()));
    let prompt = messages.saturating_add(tools);
    TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: estimate_tokens(answer),
        reported: false,
    }
}

/// The usage record of one provider call made for `ctx`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn usage_record(
    deps: &Deps,
    ctx: &TenantContext,
    conversation: Option<ConversationId>,
    provider: &str,
    model: &str,
    usage: TokenUsage,
    status: UsageStatus,
    started: Instant,
) -> UsageRecord {
    let principal = ctx.principal();
    let cost_micros =
        deps.assistant
            .cost_micros(model, usage.prompt_tokens, usage.completion_tokens);
    crate::telemetry::llm_usage(
        provider,
        model,
        usage.prompt_tokens,
        usage.completion_tokens,
        cost_micros,
    );
    deps.tenant_series.usage(
        ctx.tenant_id(),
        principal.tenant_slug.as_str(),
        u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens),
        cost_micros,
    );
    UsageRecord {
        id: UsageId::generate(),
        tenant_id: ctx.tenant_id(),
        user_id: Some(principal.user_id),
        api_key_id: match principal.subject {
            Subject::ApiKey { key_id } => Some(key_id),
            Subject::User { .. } => None,
        },
        conversation_id: conversation,
        provider: provider.to_owned(),
        model: model.to_owned(),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        counted_locally: !usage.reported,
        latency_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
        status,
        cost_micros,
        created_at: deps.clock.now(),
    }
}
