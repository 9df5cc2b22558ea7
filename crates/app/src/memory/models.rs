//! Which embedding model serves each tenant. The platform offers a catalog
//! (`[memory.embedding]` and `[[memory.embedders]]`); a tenant picks one with
//! `settings.embedding_model`. A change does not switch searches at once: it
//! records a re-embedding job, and until that job is done the tenant's
//! searches keep using the model its vectors were made with, so a search
//! never compares vectors of two models (or two lengths).

use std::sync::Arc;

use karen_domain::library::{EmbeddingJob, EmbeddingJobState};
use karen_domain::permission::Permission;
use karen_domain::ports::TenantTx;
use karen_domain::values::printable;
use karen_domain::{Error, Result, TenantContext, TenantId};

use super::EmbeddingModels;
use crate::Deps;

/// The models of one tenant's vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantModels {
    /// The model the tenant's searches use (its vectors are in this model's space).
    pub active: String,
    /// The model a pending or running job is moving the tenant to; new
    /// entries are written to its space as well.
    pub target: Option<String>,
}

impl TenantModels {
    /// Every model whose space new entries are written to.
    pub fn written(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.active.as_str()).chain(self.target.as_deref())
    }
}

/// The tenant's models, read in `tx`: the target of the newest finished job
/// (the platform default when there is none, or when that model is no longer
/// offered), and the target of an open job.
pub(crate) async fn tenant_models(
    tx: &mut dyn TenantTx,
    embedders: &EmbeddingModels,
) -> Result<TenantModels> {
    let offered = |model: &String| embedders.get(model).is_some();
    let active = tx
        .embedding_jobs()
        .last_done_job()
        .await?
        .map(|job| job.to_model)
        .filter(offered)
        .unwrap_or_else(|| embedders.default_model().model.clone());
    let target = tx
        .embedding_jobs()
        .open_job()
        .await?
        .map(|job| job.to_model)
        .filter(|model| offered(model) && *model != active);
    Ok(TenantModels { active, target })
}

/// Checks the embedding model a tenant asks for and, in `tx` (the settings
/// change's own transaction), records the job that moves the tenant to it.
/// Returns whether jobs changed (the caller then invalidates cached models and
/// wakes the worker after committing). Idempotent: asking again for the model
/// a job is already moving to, or for the current model, records nothing.
pub(crate) async fn plan_model_change(
    deps: &Deps,
    tx: &mut dyn TenantTx,
    requested: Option<&str>,
) -> Result<bool> {
    let embedders = &deps.search.embedders;
    if let Some(model) = requested
        && embedders.get(model).is_none()
    {
        let offered: Vec<&str> = embedders.ids().collect();
        return Err(Error::invalid(
            Some("settings.embedding_model"),
            format!(
                "'{}' is not an embedding model this server offers; choose one of: {} (or null for the default)",
                printable(model, 80),
                offered.join(", ")
            ),
        ));
    }
    let desired = embedders.for_setting(requested).model.clone();
    let models = tenant_models(tx, embedders).await?;
    if models.target.as_deref() == Some(desired.as_str()) {
        return Ok(false);
    }
    let now = deps.clock.now();
    let mut changed = tx.embedding_jobs().cancel_open_jobs(now).await? > 0;
    if desired != models.active {
        let job = EmbeddingJob {
            id: uuid::Uuid::now_v7(),
            tenant_id: tx.tenant_id(),
            from_model: models.active,
            to_model: desired,
            state: EmbeddingJobState::Pending,
            total: 0,
            done: 0,
            cursor: None,
            dims: None,
            attempts: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        tx.embedding_jobs().insert_job(&job).await?;
        tracing::info!(tenant_id = %job.tenant_id, from = %job.from_model, to = %job.to_model, "re-embedding job recorded");
        changed = true;
    }
    Ok(changed)
}

/// The state of a tenant's search indexes, for its admins.
#[derive(Debug, Clone)]
pub struct IndexState {
    /// The model the tenant's searches use now.
    pub model: String,
    /// Its vectors' length (`None` if it cannot be learnt: the model failed).
    pub dims: Option<u32>,
    /// What `settings.embedding_model` asks for (`None`: the platform default).
    pub requested_model: Option<String>,
    /// The models the platform offers, the default first.
    pub offered_models: Vec<String>,
    /// The newest re-embedding job, in any state.
    pub job: Option<EmbeddingJob>,
}

/// Wakes the re-embedding worker for tenants whose jobs changed.
#[derive(Default)]
pub struct JobSignal {
    tenants: std::sync::Mutex<std::collections::BTreeSet<TenantId>>,
    notify: tokio::sync::Notify,
}

impl JobSignal {
    /// Asks the worker to look at `tenant`'s jobs soon.
    pub fn wake(&self, tenant: TenantId) {
        self.tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant);
        self.notify.notify_one();
    }

    /// Waits for a wake-up, then returns the tenants named since the last one.
    pub(crate) async fn woken(&self) -> Vec<TenantId> {
        self.notify.notified().await;
        std::mem::take(
            &mut *self
                .tenants
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .collect()
    }
}

/// Reports the tenant's embedding model and re-embedding job.
#[derive(Clone)]
pub struct IndexStateService {
    deps: Arc<Deps>,
}

impl IndexStateService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// The tenant's current model, its dimension, and its newest job.
    pub async fn state(&self, ctx: &TenantContext) -> Result<IndexState> {
        ctx.require(Permission::TenantManage)?;
        let embedders = &self.deps.search.embedders;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let requested = tx.tenant().await?.settings.embedding_model;
        let models = tenant_models(tx.as_mut(), embedders).await?;
        let job = tx.embedding_jobs().latest_job().await?;
        tx.commit().await?;
        let known = self
            .deps
            .search
            .vector
            .spaces(ctx.tenant_id())
            .await?
            .into_iter()
            .find(|space| space.model == models.active)
            .map(|space| space.dims);
        let dims = match known {
            Some(dims) => Some(dims),
            None => probe_dims(embedders, &models.active).await,
        };
        Ok(IndexState {
            model: models.active,
            dims,
            requested_model: requested,
            offered_models: embedders.ids().map(str::to_owned).collect(),
            job,
        })
    }
}

/// The vector length of `model`, by embedding a word (for a tenant with no
/// vectors yet).
async fn probe_dims(embedders: &EmbeddingModels, model: &str) -> Option<u32> {
    let embedder = embedders.get(model)?;
    let answer = embedder
        .provider
        .embed(model, &["dimension".to_owned()])
        .await
        .ok()?;
    answer
        .vectors
        .first()
        .and_then(|v| u32::try_from(v.len()).ok())
}
