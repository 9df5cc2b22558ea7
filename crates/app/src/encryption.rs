//! Encryption-at-rest key management: the state of every tenant's data keys,
//! rotating a tenant's data key (new version, re-encryption in batches, old
//! versions retired) and re-wrapping every data key under a new master key.
//! Each step runs in a tenant transaction (row-level security applies) and
//! records its audit event there.

use std::sync::Arc;

use karen_domain::page::PageRequest;
use karen_domain::ports::{KeyProvider, ResealBatch, ResealCursor, Store, TenantKeyInfo};
use karen_domain::tenant::Tenant;
use karen_domain::{Actor, Clock, Result, SystemReason, TenantId, TenantScope};
use serde_json::json;

use crate::audit::{AuditTrail, Record};

/// A tenant and its data key versions.
#[derive(Debug, Clone)]
pub struct TenantKeys {
    pub tenant: Tenant,
    pub versions: Vec<TenantKeyInfo>,
}

/// What a tenant key rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// The new current version.
    pub version: u32,
    pub scanned: u64,
    pub resealed: u64,
    /// Older versions marked retired.
    pub retired: u64,
    /// An interrupted rotation was resumed under its version (no new one made).
    pub resumed: bool,
}

/// Key management for operators (`karen keys …`).
pub struct KeyManagement {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditTrail>,
}

const ACTOR: Actor = Actor::System(SystemReason::Cli);

fn scope(tenant: TenantId) -> TenantScope {
    TenantScope::system(tenant, SystemReason::Cli)
}

impl KeyManagement {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, audit: Arc<AuditTrail>) -> Self {
        Self {
            store,
            clock,
            audit,
        }
    }

    /// Every tenant, in id order.
    async fn tenants(&self) -> Result<Vec<Tenant>> {
        let mut all = Vec::new();
        let mut page = PageRequest {
            after: None,
            limit: 200,
        };
        loop {
            let mut tx = self.store.platform().await?;
            let batch = tx.list_tenants(&page).await?;
            tx.commit().await?;
            let full = batch.len() >= page.limit as usize;
            page.after = batch.last().map(|t| t.id.as_uuid());
            all.extend(batch);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Every tenant's data key versions.
    pub async fn status(&self) -> Result<Vec<TenantKeys>> {
        let mut status = Vec::new();
        for tenant in self.tenants().await? {
            let mut tx = self.store.tenant_read(scope(tenant.id)).await?;
            let versions = tx.tenant_keys().key_versions().await?;
            tx.commit().await?;
            status.push(TenantKeys { tenant, versions });
        }
        Ok(status)
    }

    /// Makes a new data key version current for `tenant`, re-encrypts its
    /// sealed content in batches of `batch` rows (one transaction each,
    /// `progress` told after each), then retires the older versions. Run
    /// again after an interruption, it resumes that rotation.
    pub async fn rotate_tenant(
        &self,
        tenant: TenantId,
        batch: u32,
        progress: &mut (dyn FnMut(&ResealBatch) + Send),
    ) -> Result<RotationReport> {
        let mut tx = self.store.tenant(scope(tenant)).await?;
        let versions = tx.tenant_keys().key_versions().await?;
        // An older version still in use beside the current one: an earlier
        // rotation stopped before it finished. Resume it under its version
        // (rows already re-encrypted are skipped) instead of starting another.
        let unfinished = versions
            .split_last()
            .filter(|(_, older)| older.iter().any(|v| v.retired_at.is_none()))
            .map(|(current, _)| current.version);
        let version = match unfinished {
            Some(version) => version,
            None => {
                let version = tx.tenant_keys().add_key_version(self.clock.now()).await?;
                self.audit
                    .record(
                        &mut *tx,
                        ACTOR,
                        Record::new("encryption.key.create").target("tenant_key", version),
                    )
                    .await?;
                version
            }
        };
        tx.commit().await?;
        let mut report = RotationReport {
            version,
            resumed: unfinished.is_some(),
            ..RotationReport::default()
        };
        let mut cursor = Some(ResealCursor::default());
        while let Some(at) = cursor {
            let mut tx = self.store.tenant(scope(tenant)).await?;
            let done = tx.tenant_keys().reseal_batch(at, batch).await?;
            tx.commit().await?;
            report.scanned += done.scanned;
            report.resealed += done.resealed;
            progress(&done);
            cursor = done.next;
        }
        let mut tx = self.store.tenant(scope(tenant)).await?;
        report.retired = tx
            .tenant_keys()
            .retire_old_key_versions(self.clock.now())
            .await?;
        self.audit
            .record(
                &mut *tx,
                ACTOR,
                Record::new("encryption.key.rotate")
                    .target("tenant_key", version)
                    .after(&json!({
                        "version": version,
                        "resealed": report.resealed,
                        "retired_versions": report.retired,
                    })),
            )
            .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Re-wraps every tenant's data keys under `new_master`, one transaction
    /// per tenant; keys already under it are left alone, so a rerun after an
    /// interruption finishes the job. `progress` gets each tenant and count.
    pub async fn rotate_master(
        &self,
        new_master: &dyn KeyProvider,
        progress: &mut (dyn FnMut(&Tenant, u64) + Send),
    ) -> Result<u64> {
        let mut total = 0;
        for tenant in self.tenants().await? {
            let mut tx = self.store.tenant(scope(tenant.id)).await?;
            let rewrapped = tx.tenant_keys().rewrap_keys(new_master).await?;
            if rewrapped > 0 {
                self.audit
                    .record(
                        &mut *tx,
                        ACTOR,
                        Record::new("encryption.master_key.rotate")
                            .target("master_key", new_master.key_id())
                            .after(&json!({ "rewrapped_versions": rewrapped })),
                    )
                    .await?;
            }
            tx.commit().await?;
            total += rewrapped;
            progress(&tenant, rewrapped);
        }
        Ok(total)
    }
}
