//! Re-embedding jobs: recorded with a change of the tenant's embedding model,
//! advanced batch by batch by a worker holding a lease.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::library::{EmbeddingJob, EmbeddingJobProgress, EmbeddingJobState};
use karen_domain::ports::{EmbeddingJobRepo, EntryKey};
use karen_domain::{Result, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::conn::Row;
use crate::rows;
use crate::tenant::SqlTenantTx;

fn job(row: &Row) -> Result<EmbeddingJob> {
    let count =
        |column: &str| -> Result<u64> { Ok(u64::try_from(row.get::<i64>(column)?).unwrap_or(0)) };
    Ok(EmbeddingJob {
        id: row.get("id")?,
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        from_model: row.get("from_model")?,
        to_model: row.get("to_model")?,
        state: EmbeddingJobState::parse(&row.get::<String>("state")?)?,
        total: count("total")?,
        done: count("done")?,
        cursor: row
            .get::<Option<String>>("cursor")?
            .as_deref()
            .map(EntryKey::parse)
            .transpose()?,
        dims: row
            .get::<Option<i32>>("dims")?
            .and_then(|d| u32::try_from(d).ok()),
        attempts: u32::try_from(row.get::<i32>("attempts")?).unwrap_or(0),
        last_error: row.get("last_error")?,
        created_at: rows::time(row, "created_at")?,
        updated_at: rows::time(row, "updated_at")?,
        finished_at: rows::opt_time(row, "finished_at")?,
    })
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl EmbeddingJobRepo for SqlTenantTx {
    async fn insert_job(&mut self, j: &EmbeddingJob) -> Result<()> {
        let q = self
            .q("INSERT INTO embedding_jobs (tenant_id, id, from_model, to_model, state, total, done, \
                cursor, dims, attempts, last_error, lease_owner, lease_until, created_at, updated_at, finished_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, $12, $13, $14)")
            .bind(j.id)
            .bind(j.from_model.clone())
            .bind(j.to_model.clone())
            .bind(j.state.as_str())
            .bind(i64_of(j.total))
            .bind(i64_of(j.done))
            .bind(j.cursor.map(|c| c.to_string()))
            .bind(j.dims.map(|d| i32::try_from(d).unwrap_or(i32::MAX)))
            .bind(i32::try_from(j.attempts).unwrap_or(i32::MAX))
            .bind(j.last_error.clone())
            .bind(to_millis(j.created_at))
            .bind(to_millis(j.updated_at))
            .bind(j.finished_at.map(to_millis));
        self.tx.execute(q).await.map(drop)
    }

    async fn job(&mut self, id: Uuid) -> Result<Option<EmbeddingJob>> {
        let q = self
            .q("SELECT * FROM embedding_jobs WHERE tenant_id = $1 AND id = $2")
            .bind(id);
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(job)
            .transpose()
    }

    async fn latest_job(&mut self) -> Result<Option<EmbeddingJob>> {
        let q =
            self.q("SELECT * FROM embedding_jobs WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1");
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(job)
            .transpose()
    }

    async fn open_job(&mut self) -> Result<Option<EmbeddingJob>> {
        let q = self.q(
            "SELECT * FROM embedding_jobs WHERE tenant_id = $1 AND state IN ('pending', 'running') \
             ORDER BY id DESC LIMIT 1",
        );
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(job)
            .transpose()
    }

    async fn last_done_job(&mut self) -> Result<Option<EmbeddingJob>> {
        let q = self.q(
            "SELECT * FROM embedding_jobs WHERE tenant_id = $1 AND state = 'done' \
             ORDER BY finished_at DESC, id DESC LIMIT 1",
        );
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(job)
            .transpose()
    }

    async fn cancel_open_jobs(&mut self, at: OffsetDateTime) -> Result<u64> {
        let q = self
            .q("UPDATE embedding_jobs SET state = 'cancelled', lease_owner = NULL, lease_until = NULL, \
                updated_at = $2, finished_at = $2 WHERE tenant_id = $1 AND state IN ('pending', 'running')")
            .bind(to_millis(at));
        self.tx.execute(q).await
    }

    async fn claim_job(
        &mut self,
        id: Uuid,
        owner: &str,
        lease_until: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let q = self
            .q("UPDATE embedding_jobs SET state = 'running', lease_owner = $3, lease_until = $4, \
                attempts = attempts + 1, updated_at = $5 \
                WHERE tenant_id = $1 AND id = $2 AND (state = 'pending' OR (state = 'running' \
                AND (lease_owner IS NULL OR lease_owner = $3 OR lease_until IS NULL OR lease_until < $5)))")
            .bind(id)
            .bind(owner.to_owned())
            .bind(to_millis(lease_until))
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? == 1)
    }

    async fn save_progress(
        &mut self,
        id: Uuid,
        owner: &str,
        p: &EmbeddingJobProgress,
        lease_until: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let q = self
            .q(
                "UPDATE embedding_jobs SET total = $4, done = $5, cursor = $6, dims = $7, \
                lease_until = $8, updated_at = $9 \
                WHERE tenant_id = $1 AND id = $2 AND state = 'running' AND lease_owner = $3",
            )
            .bind(id)
            .bind(owner.to_owned())
            .bind(i64_of(p.total))
            .bind(i64_of(p.done))
            .bind(p.cursor.map(|c| c.to_string()))
            .bind(p.dims.map(|d| i32::try_from(d).unwrap_or(i32::MAX)))
            .bind(to_millis(lease_until))
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? == 1)
    }

    async fn end_job(
        &mut self,
        id: Uuid,
        owner: &str,
        state: EmbeddingJobState,
        error: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let finished = (state != EmbeddingJobState::Pending).then(|| to_millis(at));
        let q = self
            .q(
                "UPDATE embedding_jobs SET state = $4, last_error = $5, lease_owner = NULL, \
                lease_until = NULL, updated_at = $6, finished_at = $7 \
                WHERE tenant_id = $1 AND id = $2 AND state = 'running' AND lease_owner = $3",
            )
            .bind(id)
            .bind(owner.to_owned())
            .bind(state.as_str())
            .bind(error.map(str::to_owned))
            .bind(to_millis(at))
            .bind(finished);
        Ok(self.tx.execute(q).await? == 1)
    }
}
