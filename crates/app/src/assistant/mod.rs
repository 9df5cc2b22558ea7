//! The assistant: conversations and their messages, personas, chat turns
//! against the tenant's model providers, and usage metering.

mod conversations;
mod personas;
mod turn;
mod usage;

use std::sync::Arc;

pub use conversations::{ConversationChanges, ConversationPage, ConversationService};
pub use personas::{PersonaInput, PersonaService};
pub use turn::{ChatService, TurnEvent, TurnOptions, TurnResult};
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
                (i64::from(prompt_tokens) * price.prompt_micros_per_1k
                    + i64::from(completion_tokens) * price.completion_micros_per_1k)
                    / 1000
            })
    }
}

/// The assistant's services.
#[derive(Clone)]
pub struct AssistantServices {
    pub conversations: ConversationService,
    pub personas: PersonaService,
    pub chat: ChatService,
    pub usage: UsageService,
}

impl AssistantServices {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self {
            conversations: ConversationService::new(deps.clone()),
            personas: PersonaService::new(deps.clone()),
            chat: ChatService::new(deps.clone()),
            usage: UsageService::new(deps),
        }
    }
}
