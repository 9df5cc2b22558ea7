//! all-MiniLM-L6-v2 in-process (feature `local-embeddings`): a real
//! sentence-embedding model without a server or network, on the CPU.
//!
//! It reproduces sentence-transformers' pipeline for this model: the BERT
//! WordPiece tokenizer (`tokenizer.json`), inputs truncated to 256 word
//! pieces including `[CLS]` and `[SEP]` (the model's `max_seq_length`),
//! the 6-layer encoder, mean pooling over the real tokens, L2
//! normalisation: 384 dimensions, cosine-ready.
//!
//! The weights are not in the repository: `scripts/fetch-minilm.sh DIR`
//! puts `config.json`, `tokenizer.json` and `model.safetensors` into `DIR`,
//! and [`MiniLmEmbedder::load`] reads them from there.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use karen_domain::ports::{EmbeddingProvider, Embeddings, LlmError};
use tokenizers::{Encoding, Tokenizer, TruncationParams};
use tokio::sync::Semaphore;

use crate::embedding_common::{check_inputs, check_model};
use crate::embedding_providers::{MINILM_DIMENSIONS, MINILM_MODEL_ID};
use crate::minilm_bert::{BertConfig, BertModel, mean_pool};

/// How the local model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiniLmConfig {
    /// Word pieces kept per input, `[CLS]` and `[SEP]` included; the rest
    /// is cut off (the model was trained on at most 256).
    pub max_tokens: usize,
    /// Inputs run through the encoder together: bigger batches are faster
    /// per input but hold more memory (about 4 MB per input at 256 tokens).
    pub batch_size: usize,
}

impl Default for MiniLmConfig {
    /// 256 word pieces, batches of 32.
    fn default() -> Self {
        Self {
            max_tokens: 256,
            batch_size: 32,
        }
    }
}

/// The model and tokenizer, shared with the blocking tasks that run them.
struct Loaded {
    model: BertModel,
    tokenizer: Tokenizer,
    hidden_size: usize,
    pad_id: u32,
    batch_size: usize,
}

/// all-MiniLM-L6-v2 as an [`EmbeddingProvider`]; see the module documentation.
pub struct MiniLmEmbedder {
    name: String,
    directory: PathBuf,
    config: MiniLmConfig,
    loaded: Arc<Loaded>,
    /// One inference at a time: the matrix products already use every core,
    /// and concurrent batches would only compete for them and for memory.
    running: Arc<Semaphore>,
}

impl MiniLmEmbedder {
    /// Loads the model from `directory` (`config.json`, `tokenizer.json`,
    /// `model.safetensors`). Reads about 90 MB and blocks while doing so:
    /// call it at startup or on a blocking thread.
    pub fn load(
        name: impl Into<String>,
        directory: impl AsRef<Path>,
        config: MiniLmConfig,
    ) -> Result<Self, LlmError> {
        let directory = directory.as_ref().to_path_buf();
        let refuse = |what: String| {
            LlmError::Refused(format!(
                "cannot load {MINILM_MODEL_ID} from {}: {what} (scripts/fetch-minilm.sh DIR \
                 fetches the model)",
                directory.display()
            ))
        };
        let read = |file: &str| {
            std::fs::read(directory.join(file)).map_err(|error| refuse(format!("{file}: {error}")))
        };
        let bert_config: BertConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|error| refuse(format!("config.json: {error}")))?;
        bert_config
            .check()
            .map_err(|problem| refuse(format!("config.json: {problem}")))?;
        if bert_config.hidden_size != MINILM_DIMENSIONS {
            return Err(refuse(format!(
                "the model has {} dimensions, not {MINILM_DIMENSIONS}",
                bert_config.hidden_size
            )));
        }
        if config.max_tokens < 2 || config.max_tokens > bert_config.max_position_embeddings {
            return Err(refuse(format!(
                "max_tokens must be between 2 and {}",
                bert_config.max_position_embeddings
            )));
        }
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|error| refuse(format!("tokenizer.json: {error}")))?;
        // The file asks for padding to 128 and truncation at 128; batches are
        // padded here instead, and truncated at the model's own limit.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|error| refuse(format!("tokenizer.json: {error}")))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        // Read into memory rather than memory-mapped: mapping a file is
        // `unsafe` (another process could change it underneath).
        let weights = read("model.safetensors")?;
        let variables = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|error| refuse(format!("model.safetensors: {error}")))?;
        let model = BertModel::load(variables, &bert_config)
            .map_err(|error| refuse(format!("model.safetensors: {error}")))?;
        Ok(Self {
            name: name.into(),
            directory,
            config,
            loaded: Arc::new(Loaded {
                model,
                tokenizer,
                hidden_size: bert_config.hidden_size,
                pad_id,
                batch_size: config.batch_size.max(1),
            }),
            running: Arc::new(Semaphore::new(1)),
        })
    }
}

impl fmt::Debug for MiniLmEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiniLmEmbedder")
            .field("name", &self.name)
            .field("directory", &self.directory)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EmbeddingProvider for MiniLmEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    /// Runs on the blocking pool, one call at a time. `prompt_tokens` counts
    /// the word pieces the model read (after truncation, with `[CLS]` and
    /// `[SEP]`).
    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, LlmError> {
        check_model(model, MINILM_MODEL_ID)?;
        check_inputs(inputs)?;
        let permit = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_closed| LlmError::Refused("the local embedder is shut down".into()))?;
        let loaded = Arc::clone(&self.loaded);
        let owned = inputs.to_vec();
        // The permit moves into the task: if the caller goes away, the
        // inference still runs to its end, and still counts as running.
        let task = move || {
            let _permit = permit;
            loaded.embed(owned)
        };
        let (vectors, prompt_tokens) =
            tokio::task::spawn_blocking(task).await.map_err(|error| {
                LlmError::InvalidResponse(format!("the local model failed: {error}"))
            })??;
        Ok(Embeddings {
            model: MINILM_MODEL_ID.to_owned(),
            vectors,
            prompt_tokens,
            // The model's own tokenizer counted them.
            counted_locally: false,
        })
    }
}

/// An inference failure: not transient, the same input would fail again.
fn model_error(error: impl fmt::Display) -> LlmError {
    LlmError::InvalidResponse(format!("the local model failed: {error}"))
}

impl Loaded {
    /// The normalised vectors of `inputs`, in order, and the word pieces read.
    fn embed(&self, inputs: Vec<String>) -> Result<(Vec<Vec<f32>>, u32), LlmError> {
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(model_error)?;
        let prompt_tokens = encodings
            .iter()
            .map(|encoding| u32::try_from(encoding.len()).unwrap_or(u32::MAX))
            .fold(0_u32, u32::saturating_add);
        // Batches of similar lengths waste little on padding: run the inputs
        // shortest first, then put the vectors back in input order.
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&index| encodings[index].len());
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); encodings.len()];
        for batch in order.chunks(self.batch_size) {
            let members: Vec<&Encoding> = batch.iter().map(|&index| &encodings[index]).collect();
            for (&index, vector) in batch.iter().zip(self.run_batch(&members)?) {
                vectors[index] = vector;
            }
        }
        Ok((vectors, prompt_tokens))
    }

    /// Encoder, mean pooling and normalisation for one padded batch.
    fn run_batch(&self, encodings: &[&Encoding]) -> Result<Vec<Vec<f32>>, LlmError> {
        let length = encodings
            .iter()
            .map(|encoding| encoding.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let size = encodings.len() * length;
        let (mut ids, mut types, mut mask) = (
            Vec::with_capacity(size),
            Vec::with_capacity(size),
            Vec::with_capacity(size),
        );
        for encoding in encodings {
            let padding = length - encoding.len();
            ids.extend_from_slice(encoding.get_ids());
            ids.extend(std::iter::repeat_n(self.pad_id, padding));
            types.extend_from_slice(encoding.get_type_ids());
            types.extend(std::iter::repeat_n(0, padding));
            mask.extend_from_slice(encoding.get_attention_mask());
            mask.extend(std::iter::repeat_n(0, padding));
        }
        let shape = (encodings.len(), length);
        let tensor = |values: Vec<u32>| Tensor::from_vec(values, shape, &Device::Cpu);
        let ids = tensor(ids).map_err(model_error)?;
        let types = tensor(types).map_err(model_error)?;
        let mask = tensor(mask).map_err(model_error)?;
        let states = self
            .model
            .forward(&ids, &types, &mask)
            .map_err(model_error)?;
        let pooled: Vec<Vec<f32>> = mean_pool(&states, &mask)
            .and_then(|pooled| pooled.to_vec2())
            .map_err(model_error)?;
        pooled
            .into_iter()
            .map(|vector| {
                if vector.len() != self.hidden_size {
                    return Err(model_error("the pooled vector has the wrong length"));
                }
                Ok(normalized(vector))
            })
            .collect()
    }
}

/// `vector` scaled to unit length (sentence-transformers' `Normalize`).
fn normalized(vector: Vec<f32>) -> Vec<f32> {
    let norm = vector
        .iter()
        .map(|value| f64::from(*value) * f64::from(*value))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return vector;
    }
    vector
        .into_iter()
        .map(|value| (f64::from(value) / norm) as f32)
        .collect()
}

#[cfg(test)]
#[path = "minilm_tests.rs"]
mod tests;
