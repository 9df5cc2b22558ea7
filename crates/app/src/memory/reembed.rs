//! The re-embedding worker: moves a tenant's vectors to the embedding model
//! its settings ask for. It re-embeds every memory and chunk with the new
//! model into that model's own vector space (the cache spares texts embedded
//! before), saving progress after each batch; then it reconciles the new
//! space with the store (entries written or deleted meanwhile), marks the job
//! done, which switches the tenant's searches over, and drops the old space.
//!
//! Until the switch, searches use the old model and new entries are written
//! to both spaces. A job interrupted by a restart resumes after its last saved
//! entry; a replica holds a job through a lease, which another takes over when
//! it runs out. Every step is an upsert or a removal by key, so repeating one
//! is harmless.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use karen_domain::library::{EmbeddingJob, EmbeddingJobProgress, EmbeddingJobState};
use karen_domain::ports::{EntryKey, VectorSpace};
use karen_domain::{Error, Result, SystemReason, TenantId, TenantScope};

use super::indexer::{EMBED_BATCH, space_of};
use super::maintenance::{IndexMaintenance, NoProgress};
use crate::cache::{Topic, invalidate};
use crate::telemetry;
use crate::tenants::all_tenant_ids;

/// How long a lease lasts without a saved batch.
const LEASE: Duration = Duration::from_secs(30);
/// Attempts after which a failing job is given up.
const MAX_ATTEMPTS: u32 = 5;
/// How often every tenant is looked at (jobs of other replicas, retries).
const SCAN_EVERY: Duration = Duration::from_secs(60);

/// How a run of a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done: the tenant's searches use the new model.
    Switched,
    /// Stopped: the job was cancelled or another worker took it over.
    Stopped,
}

/// Runs the re-embedding jobs of every tenant.
#[derive(Clone)]
pub struct ReembedWorker {
    maintenance: IndexMaintenance,
    /// This worker's lease name.
    owner: String,
}

fn system(tenant: TenantId) -> TenantScope {
    TenantScope::system(tenant, SystemReason::Indexing)
}

impl ReembedWorker {
    pub(crate) fn new(maintenance: IndexMaintenance) -> Self {
        Self {
            maintenance,
            owner: format!("worker-{}", uuid::Uuid::now_v7().simple()),
        }
    }

    fn lease_until(&self) -> time::OffsetDateTime {
        self.maintenance.deps.clock.now() + LEASE
    }

    /// Runs forever: every tenant at start and every minute (jobs a restart
    /// interrupted, retries), and a tenant at once when its setting changes.
    pub async fn run(&self) {
        let mut every = tokio::time::interval(SCAN_EVERY);
        let signal = self.maintenance.deps.search.jobs.clone();
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if let Err(error) = self.run_all().await {
                        tracing::warn!(%error, "looking for re-embedding jobs failed");
                    }
                }
                tenants = signal.woken() => {
                    for tenant in tenants {
                        self.run_logged(tenant).await;
                    }
                }
            }
        }
    }

    /// Runs the open job of every tenant; returns how many switched.
    pub async fn run_all(&self) -> Result<usize> {
        let mut switched = 0;
        for tenant in all_tenant_ids(self.maintenance.deps.store.as_ref()).await? {
            if self.run_logged(tenant).await == Some(JobOutcome::Switched) {
                switched += 1;
            }
        }
        Ok(switched)
    }

    async fn run_logged(&self, tenant: TenantId) -> Option<JobOutcome> {
        match self.run_tenant(tenant).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(tenant_id = %tenant, %error, "re-embedding job failed; it is retried");
                None
            }
        }
    }

    /// Runs the tenant's open job, if any and if no other worker holds it.
    pub async fn run_tenant(&self, tenant: TenantId) -> Result<Option<JobOutcome>> {
        let deps = &self.maintenance.deps;
        let mut tx = deps.store.tenant_read(system(tenant)).await?;
        let job = tx.embedding_jobs().open_job().await?;
        tx.commit().await?;
        let Some(job) = job else {
            return Ok(None);
        };
        let mut tx = deps.store.tenant(system(tenant)).await?;
        let claimed = tx
            .embedding_jobs()
            .claim_job(job.id, &self.owner, self.lease_until(), deps.clock.now())
            .await?;
        tx.commit().await?;
        if !claimed {
            return Ok(None);
        }
        let started = Instant::now();
        let result = self.run_job(&job).await;
        telemetry::job_finished("reembed", result.is_ok(), started.elapsed());
        match result {
            Ok(outcome) => Ok(Some(outcome)),
            Err(error) => {
                // The claim counted this attempt.
                let state = if job.attempts + 1 >= MAX_ATTEMPTS {
                    EmbeddingJobState::Failed
                } else {
                    EmbeddingJobState::Pending
                };
                let message = match &error {
                    Error::Internal(_) => "an internal error stopped the job".to_owned(),
                    other => other.to_string(),
                };
                let mut tx = deps.store.tenant(system(tenant)).await?;
                tx.embedding_jobs()
                    .end_job(job.id, &self.owner, state, Some(&message), deps.clock.now())
                    .await?;
                tx.commit().await?;
                Err(error)
            }
        }
    }

    /// Saves progress; `false` when the job is no longer this worker's.
    async fn save(&self, job: &EmbeddingJob, progress: &EmbeddingJobProgress) -> Result<bool> {
        let deps = &self.maintenance.deps;
        let mut tx = deps.store.tenant(system(job.tenant_id)).await?;
        let kept = tx
            .embedding_jobs()
            .save_progress(
                job.id,
                &self.owner,
                progress,
                self.lease_until(),
                deps.clock.now(),
            )
            .await?;
        tx.commit().await?;
        Ok(kept)
    }

    async fn run_job(&self, job: &EmbeddingJob) -> Result<JobOutcome> {
        let tenant = job.tenant_id;
        let deps = &self.maintenance.deps;
        let model = self
            .maintenance
            .indexer
            .embedder(&job.to_model)
            .map_err(|_| {
                Error::invalid(
                    Some("settings.embedding_model"),
                    format!("the model '{}' is no longer offered", job.to_model),
                )
            })?
            .clone();
        let (items, _) = self.maintenance.source_items(tenant).await?;
        let start = items.partition_point(|item| job.cursor.is_some_and(|c| item.key <= c));
        let mut progress = EmbeddingJobProgress {
            total: items.len() as u64,
            done: start as u64,
            cursor: job.cursor,
            dims: job.dims,
        };
        if !self.save(job, &progress).await? {
            return Ok(JobOutcome::Stopped);
        }
        for batch in items[start..].chunks(EMBED_BATCH) {
            let (vectors, _) = self.maintenance.vectors(tenant, &model, batch).await?;
            if progress.dims.is_none() {
                progress.dims = vectors
                    .iter()
                    .find(|v| !v.is_empty())
                    .map(|v| space_of(&model.model, v).dims);
            }
            self.maintenance
                .indexer
                .upsert_vectors(tenant, &model.model, batch, vectors)
                .await?;
            progress.done += batch.len() as u64;
            progress.cursor = batch.last().map(|item| item.key);
            if !self.save(job, &progress).await? {
                return Ok(JobOutcome::Stopped);
            }
        }
        // Entries added or removed while the job ran (their writers may have
        // seen the tenant before the job existed).
        if let Some(dims) = progress.dims {
            let space = VectorSpace {
                model: model.model.clone(),
                dims,
            };
            let (now_items, _) = self.maintenance.source_items(tenant).await?;
            let expected: BTreeSet<EntryKey> = now_items.iter().map(|i| i.key).collect();
            let held: BTreeSet<EntryKey> = deps
                .search
                .vector
                .keys(tenant, &space)
                .await?
                .into_iter()
                .collect();
            let orphaned: Vec<EntryKey> = held.difference(&expected).copied().collect();
            deps.search.vector.remove(tenant, &orphaned).await?;
            let missing: Vec<_> = now_items
                .into_iter()
                .filter(|item| !held.contains(&item.key))
                .collect();
            self.maintenance
                .write_vectors(tenant, &model, &missing, &NoProgress)
                .await?;
            progress.total = expected.len() as u64;
            progress.done = progress.total;
        }
        if !self.save(job, &progress).await? {
            return Ok(JobOutcome::Stopped);
        }
        let mut tx = deps.store.tenant(system(tenant)).await?;
        let switched = tx
            .embedding_jobs()
            .end_job(
                job.id,
                &self.owner,
                EmbeddingJobState::Done,
                None,
                deps.clock.now(),
            )
            .await?;
        tx.commit().await?;
        if !switched {
            return Ok(JobOutcome::Stopped);
        }
        invalidate(deps.counters.as_ref(), tenant, Topic::Embedding).await;
        tracing::info!(tenant_id = %tenant, from = %job.from_model, to = %job.to_model, entries = progress.total, "re-embedding done; searches use the new model");
        // The old spaces go, except one a newer job is filling.
        let models = self.maintenance.models(tenant).await?;
        for space in deps.search.vector.spaces(tenant).await? {
            if space.model != models.active && models.target.as_deref() != Some(&space.model) {
                deps.search.vector.drop_space(tenant, &space).await?;
            }
        }
        Ok(JobOutcome::Switched)
    }
}
