//! Retries, fallback and circuit breaking for embeddings, with the same loop
//! and the same rules as [`crate::ResilientChat`] (see `resilience.rs`).
//!
//! Fallback only makes sense between members serving the same model (two
//! replicas of one vLLM deployment, OpenAI and an Azure deployment of the
//! same model): vectors of different models live in different spaces and
//! must never meet in one index. Every member receives the same model id;
//! whether an answer fits an index (model id and dimensions of its space)
//! is the vector index's check.

use async_trait::async_trait;
use karen_domain::ports::{EmbeddingProvider, Embeddings, LlmError};

use crate::embedding_common::check_inputs;
use crate::resilience::{Member, RetryPolicy, run_chain};

/// A member of an embedding chain.
pub type EmbeddingChainMember = Member<dyn EmbeddingProvider>;

/// Embeddings together with the chain member that computed them (the port's
/// [`Embeddings`] has no field for it; metering wants it).
#[derive(Debug, Clone, PartialEq)]
pub struct ServedEmbeddings {
    /// The answer.
    pub embeddings: Embeddings,
    /// The name of the member that answered.
    pub provider: String,
}

/// An [`EmbeddingProvider`] that retries and falls back over its members.
#[derive(Debug)]
pub struct ResilientEmbeddings {
    name: String,
    members: Vec<EmbeddingChainMember>,
    retry: RetryPolicy,
}

impl ResilientEmbeddings {
    /// A chain trying `members` (which must serve the same model) in order.
    pub fn new(
        name: impl Into<String>,
        members: Vec<EmbeddingChainMember>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            name: name.into(),
            members,
            retry,
        }
    }

    /// Embeds `inputs` and says which member answered.
    pub async fn embed_served(
        &self,
        model: &str,
        inputs: &[String],
    ) -> Result<ServedEmbeddings, LlmError> {
        // Refused here rather than by each member, so that no breaker
        // counts a caller's mistake and no retry repeats it.
        check_inputs(inputs)?;
        let (embeddings, served_by) =
            run_chain(&self.name, &self.retry, &self.members, |provider| {
                provider.embed(model, inputs)
            })
            .await?;
        Ok(ServedEmbeddings {
            embeddings,
            provider: served_by.to_owned(),
        })
    }

    /// The members, in the order they are tried.
    pub fn members(&self) -> &[EmbeddingChainMember] {
        &self.members
    }
}

#[async_trait]
impl EmbeddingProvider for ResilientEmbeddings {
    fn name(&self) -> &str {
        &self.name
    }

    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, LlmError> {
        Ok(self.embed_served(model, inputs).await?.embeddings)
    }
}

#[cfg(test)]
#[path = "resilient_embeddings_tests.rs"]
mod tests;
