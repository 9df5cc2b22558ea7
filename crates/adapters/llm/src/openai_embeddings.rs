//! `POST {base_url}/embeddings` for [`OpenAiCompatible`]: OpenAI, vLLM,
//! llama.cpp server and Ollama's `/v1` all speak it.
//!
//! Large inputs are sent in batches of at most `embedding_batch_size`
//! inputs, one after the other (a local server is better served by one
//! batch at a time than by several competing for its cores). The vectors of
//! all batches are checked to have one length and come back in input order.

use async_trait::async_trait;
use karen_domain::ports::{EmbeddingProvider, Embeddings, LlmError};

use super::OpenAiCompatible;
use crate::embedding_common::{check_inputs, check_vectors};
use crate::http::read_json;
use crate::openai_wire::{EmbeddingsBody, EmbeddingsWire};
use crate::tokens::estimate_tokens;

/// The most inputs sent in one `/embeddings` call unless configured otherwise
/// (OpenAI accepts 2048; self-hosted servers are happier with fewer).
pub const DEFAULT_EMBEDDING_BATCH_SIZE: usize = 256;

/// One upstream call's answer.
struct Batch {
    model: Option<String>,
    vectors: Vec<Vec<f32>>,
    prompt_tokens: u32,
    /// Whether the upstream sent no usage (Karen counted).
    counted_locally: bool,
}

impl OpenAiCompatible {
    /// One `/embeddings` call, as an `embedding.call` span (model and token
    /// count, never the inputs).
    #[tracing::instrument(
        name = "embedding.call",
        skip_all,
        fields(
            otel.kind = "client",
            gen_ai.operation.name = "embeddings",
            gen_ai.system = %self.name,
            gen_ai.request.model = %model,
            embedding.inputs = inputs.len(),
            gen_ai.usage.input_tokens = tracing::field::Empty,
        )
    )]
    async fn embed_batch(&self, model: &str, inputs: &[String]) -> Result<Batch, LlmError> {
        let body = EmbeddingsBody {
            model,
            input: inputs,
            encoding_format: "float",
        };
        let http = self
            .post_json("embeddings", &body)
            .timeout(self.timeouts.request);
        let response = self.send(http).await?;
        let mut wire: EmbeddingsWire = read_json(response).await?;
        let vectors = wire.vectors_in_order(inputs.len())?;
        let counted_locally = wire.usage.is_none();
        let prompt_tokens = match wire.usage {
            Some(usage) => usage.prompt_tokens,
            None => inputs
                .iter()
                .map(|input| estimate_tokens(input))
                .fold(0, u32::saturating_add),
        };
        tracing::Span::current().record("gen_ai.usage.input_tokens", prompt_tokens);
        Ok(Batch {
            model: wire.model.filter(|name| !name.is_empty()),
            vectors,
            prompt_tokens,
            counted_locally,
        })
    }
}

#[async_trait]
impl EmbeddingProvider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }

    /// Refuses, before any call, an empty list and an empty string (OpenAI
    /// answers both with a 400). Token counts are the upstream's
    /// `usage.prompt_tokens`, or counted locally for a batch without them.
    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, LlmError> {
        check_inputs(inputs)?;
        if let Some(index) = inputs.iter().position(String::is_empty) {
            return Err(LlmError::Refused(format!(
                "input {index} is empty; there is nothing to embed in it"
            )));
        }
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut prompt_tokens: u32 = 0;
        let mut dimensions = None;
        let mut answered_model: Option<String> = None;
        let mut counted_locally = false;
        for batch_inputs in inputs.chunks(self.embedding_batch_size.max(1)) {
            let batch = self.embed_batch(model, batch_inputs).await?;
            dimensions = Some(check_vectors(
                &batch.vectors,
                batch_inputs.len(),
                dimensions,
            )?);
            if let Some(name) = batch.model {
                match &answered_model {
                    // Two models in one answer would mix two vector spaces.
                    Some(first) if *first != name => {
                        return Err(LlmError::InvalidResponse(format!(
                            "the batches were embedded by different models ('{first}', '{name}')"
                        )));
                    }
                    Some(_) => {}
                    None => answered_model = Some(name),
                }
            }
            prompt_tokens = prompt_tokens.saturating_add(batch.prompt_tokens);
            counted_locally |= batch.counted_locally;
            vectors.extend(batch.vectors);
        }
        Ok(Embeddings {
            model: answered_model.unwrap_or_else(|| model.to_owned()),
            vectors,
            prompt_tokens,
            counted_locally,
        })
    }
}

#[cfg(test)]
#[path = "openai_embeddings_tests.rs"]
mod tests;
