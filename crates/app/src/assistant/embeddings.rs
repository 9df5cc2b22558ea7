//! Embeddings for a tenant's own applications (the OpenAI-compatible
//! `POST /v1/embeddings`): through the tenant's own OpenAI-compatible
//! providers when they list the model, else through the platform's embedding
//! models (`[memory.embedding]`, `[[memory.embedders]]`). Vectors go through
//! the tenant's embedding cache (by model and content hash), so an input
//! embedded before — by this API or by memory and document indexing — costs
//! no provider call. Each provider call passes the budget guard first and
//! writes a usage record with the vectors it cached, in one transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use karen_domain::chat::{UsageStatus, estimate_tokens};
use karen_domain::embeddings::{check_inputs, fit_dimensions};
use karen_domain::permission::Permission;
use karen_domain::ports::{EmbeddingProvider, RoutedEmbeddings, TokenUsage};
use karen_domain::values::printable;
use karen_domain::{Error, Result, TenantContext};

use super::budgets::{BudgetGuard, CallPlan};
use super::turn::upstream_error;
use super::usage_record;
use crate::Deps;
use crate::memory::sha256_hex;

/// An embeddings request in vendor-neutral form.
#[derive(Debug, Clone)]
pub struct EmbeddingRequest {
    /// A model the tenant may embed with (`GET /v1/models`).
    pub model: String,
    pub inputs: Vec<String>,
    /// Shorter vectors (only for models that support it, see
    /// [`karen_domain::embeddings::fit_dimensions`]).
    pub dimensions: Option<u32>,
}

/// The vectors of a request, in input order.
#[derive(Debug, Clone)]
pub struct EmbeddingAnswer {
    /// The model as requested.
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    /// The tokens metered for this request: those of the inputs sent to the
    /// provider (inputs found in the cache cost nothing).
    pub prompt_tokens: u32,
}

/// The embeddings service.
#[derive(Clone)]
pub struct EmbeddingService {
    deps: Arc<Deps>,
    guard: BudgetGuard,
}

/// Where a model's vectors come from.
#[derive(Clone)]
struct Target {
    provider: Arc<dyn EmbeddingProvider>,
    upstream_model: String,
    cache_key: String,
}

impl From<RoutedEmbeddings> for Target {
    fn from(route: RoutedEmbeddings) -> Self {
        Self {
            provider: route.provider,
            upstream_model: route.upstream_model,
            cache_key: route.cache_key,
        }
    }
}

/// Inputs that were not in the cache: their texts and content hashes.
struct Missing {
    texts: Vec<String>,
    hashes: Vec<String>,
}

impl EmbeddingService {
    pub(crate) fn new(deps: Arc<Deps>, guard: BudgetGuard) -> Self {
        Self { guard, deps }
    }

    /// The embedding models the tenant may use: its own providers' models,
    /// then the platform's embedding models (the default first).
    pub async fn models(&self, ctx: &TenantContext) -> Result<Vec<String>> {
        ctx.require(Permission::EmbeddingsCreate)?;
        let mut models = self.deps.router.embedding_models(ctx.tenant_id()).await?;
        for id in self.deps.search.embedders.ids() {
            if !models.iter().any(|known| known == id) {
                models.push(id.to_owned());
            }
        }
        Ok(models)
    }

    /// The tenant's provider for `model`, else the platform's; `model_not_found` otherwise.
    async fn target(&self, ctx: &TenantContext, model: &str) -> Result<Target> {
        if let Some(route) = self
            .deps
            .router
            .route_embeddings(ctx.tenant_id(), model)
            .await?
        {
            return Ok(route.into());
        }
        match self.deps.search.embedders.get(model) {
            Some(offered) => Ok(Target {
                provider: offered.provider.clone(),
                upstream_model: offered.model.clone(),
                // The key memory and document indexing use: one cache for both.
                cache_key: offered.model.clone(),
            }),
            None => Err(Error::ModelNotFound(printable(model, 100))),
        }
    }

    /// Embeds the inputs, in order.
    pub async fn embed(
        &self,
        ctx: &TenantContext,
        request: EmbeddingRequest,
    ) -> Result<EmbeddingAnswer> {
        ctx.require(Permission::EmbeddingsCreate)?;
        if request.model.trim().is_empty() {
            return Err(Error::invalid(Some("model"), "model is required"));
        }
        check_inputs(&request.inputs)?;
        if request.dimensions == Some(0) {
            return Err(Error::invalid(
                Some("dimensions"),
                "dimensions must be at least 1",
            ));
        }
        let target = self.target(ctx, &request.model).await?;
        let hashes: Vec<String> = request
            .inputs
            .iter()
            .map(|text| sha256_hex(&[text.as_bytes()]))
            .collect();
        let mut known: HashMap<String, Vec<f32>> = HashMap::new();
        let mut missing = Missing {
            texts: Vec::new(),
            hashes: Vec::new(),
        };
        {
            // Each distinct text is looked up, and sent, once.
            let mut seen: HashSet<&str> = HashSet::with_capacity(hashes.len());
            let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
            for (text, hash) in request.inputs.iter().zip(&hashes) {
                if !seen.insert(hash.as_str()) {
                    continue;
                }
                let cached = if self.deps.caching.enabled {
                    tx.embeddings().embedding(&target.cache_key, hash).await?
                } else {
                    None
                };
                crate::telemetry::cache_lookup("embeddings", cached.is_some());
                match cached {
                    Some(vector) => {
                        known.insert(hash.clone(), vector);
                    }
                    None => {
                        missing.texts.push(text.clone());
                        missing.hashes.push(hash.clone());
                    }
                }
            }
            tx.commit().await?;
        }
        let mut prompt_tokens = 0;
        if !missing.texts.is_empty() {
            // Its own task: a client that disconnects does not leave the call unsettled.
            let service = self.clone();
            let call_ctx = ctx.clone();
            let call_target = target.clone();
            let (tokens, fresh) =
                tokio::spawn(async move { service.call(&call_ctx, &call_target, missing).await })
                    .await
                    .map_err(|error| Error::internal(format!("embedding task: {error}")))??;
            prompt_tokens = tokens;
            known.extend(fresh);
        }
        let vectors = hashes
            .iter()
            .map(|hash| {
                known
                    .get(hash)
                    .cloned()
                    .ok_or_else(|| Error::internal("an input has no vector"))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(first) = vectors.first()
            && vectors.iter().any(|v| v.len() != first.len())
        {
            // Cached vectors of another length: the provider changed under the model's name.
            return Err(Error::Upstream(format!(
                "the vectors of the model '{}' do not all have one length; the provider changed",
                request.model
            )));
        }
        let vectors = fit_dimensions(&target.upstream_model, vectors, request.dimensions)?;
        Ok(EmbeddingAnswer {
            model: request.model,
            vectors,
            prompt_tokens,
        })
    }

    /// One metered provider call for the inputs the cache lacked; caches the
    /// vectors with the usage record. Returns the metered tokens and the
    /// vectors by content hash.
    async fn call(
        &self,
        ctx: &TenantContext,
        target: &Target,
        missing: Missing,
    ) -> Result<(u32, Vec<(String, Vec<f32>)>)> {
        let estimate = missing
            .texts
            .iter()
            .map(|text| estimate_tokens(text))
            .fold(0_u32, u32::saturating_add);
        let provider_name = target.provider.name().to_owned();
        let grant = self
            .guard
            .reserve(CallPlan {
                ctx,
                conversation: None,
                provider: &provider_name,
                model: &target.upstream_model,
                prompt_tokens: estimate,
                max_tokens: None,
                generates: false,
            })
            .await?;
        let started = Instant::now();
        let answer = target
            .provider
            .embed(&target.upstream_model, &missing.texts)
            .await;
        let (usage, status, outcome) = match answer {
            Ok(answer) if answer.vectors.len() == missing.texts.len() => (
                TokenUsage {
                    prompt_tokens: answer.prompt_tokens,
                    completion_tokens: 0,
                    reported: !answer.counted_locally,
                },
                UsageStatus::Ok,
                Ok(answer.vectors),
            ),
            Ok(answer) => (
                locally(estimate),
                UsageStatus::Error,
                Err(Error::Upstream(format!(
                    "the embedding provider returned {} vectors for {} inputs",
                    answer.vectors.len(),
                    missing.texts.len()
                ))),
            ),
            Err(error) => (
                locally(estimate),
                UsageStatus::Error,
                Err(upstream_error(&error)),
            ),
        };
        let record = usage_record(
            &self.deps,
            ctx,
            None,
            &provider_name,
            &target.upstream_model,
            usage,
            status,
            started,
        );
        let now = self.deps.clock.now();
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let fresh: Vec<(String, Vec<f32>)> = match outcome {
            Ok(vectors) => missing.hashes.into_iter().zip(vectors).collect(),
            Err(error) => {
                BudgetGuard::settle(&mut *tx, &grant, &record).await?;
                tx.commit().await?;
                return Err(error);
            }
        };
        for (hash, vector) in &fresh {
            tx.embeddings()
                .put_embedding(&target.cache_key, hash, vector, now)
                .await?;
        }
        BudgetGuard::settle(&mut *tx, &grant, &record).await?;
        tx.commit().await?;
        Ok((usage.prompt_tokens, fresh))
    }
}

fn locally(prompt_tokens: u32) -> TokenUsage {
    TokenUsage {
        prompt_tokens,
        completion_tokens: 0,
        reported: false,
    }
}
