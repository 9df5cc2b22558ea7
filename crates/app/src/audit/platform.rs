//! The platform chain (operator actions outside any tenant) and the record
//! of permission refusals: the parts of the trail that are not a tenant's
//! own actions.

use karen_domain::audit::{AuditEvent, AuditFilter, Checkpoint, Outcome, PLATFORM_CHAIN};
use karen_domain::permission::Permission;
use karen_domain::ports::PlatformTx;
use karen_domain::{Actor, OperatorPrincipal, Result, TenantContext};

use super::{AuditPage, AuditTrail, DENIAL_WRITE_FAILURES_METRIC, Record, VerifyReport};

impl AuditTrail {
    /// Appends an event to the platform chain in `tx` (the platform
    /// transaction of the operator action), with the same guarantees as
    /// [`AuditTrail::record`].
    pub async fn record_platform(
        &self,
        tx: &mut dyn PlatformTx,
        actor: Actor,
        record: Record,
    ) -> Result<AuditEvent> {
        self.append(tx.audit(), PLATFORM_CHAIN, actor, record).await
    }

    /// Records a platform event in a transaction of its own (refusals and
    /// reads, which change nothing else).
    pub async fn record_platform_alone(&self, actor: Actor, record: Record) -> Result<AuditEvent> {
        let mut tx = self.store.platform().await?;
        let event = self.record_platform(&mut *tx, actor, record).await?;
        tx.commit().await?;
        Ok(event)
    }

    /// Records that `ctx` was refused `permission` on `route` (`METHOD
    /// /template`) as `authz.denied`. Never fails: the refusal stands
    /// whether or not its record could be written (a failure is logged and
    /// counted in [`DENIAL_WRITE_FAILURES_METRIC`]).
    pub async fn record_denial(&self, ctx: &TenantContext, permission: Permission, route: &str) {
        let record = Record::new("authz.denied")
            .target("permission", permission.as_str())
            .outcome(Outcome::Denied)
            .after(&serde_json::json!({ "route": route, "permission": permission.as_str() }));
        if let Err(error) = self
            .record_alone(ctx.scope(), ctx.scope().actor(), record)
            .await
        {
            metrics::counter!(DENIAL_WRITE_FAILURES_METRIC).increment(1);
            tracing::warn!(%error, route, "could not record a permission refusal in the audit trail");
        }
    }

    /// As [`AuditTrail::checkpoint`], for the platform chain.
    pub async fn checkpoint_platform(&self) -> Result<Option<Checkpoint>> {
        if self.signer.is_none() {
            return Ok(None);
        }
        let mut tx = self.store.platform().await?;
        let checkpoint = self.checkpoint_head(tx.audit(), PLATFORM_CHAIN).await?;
        tx.commit().await?;
        Ok(checkpoint)
    }

    /// One page of the platform chain for the operator (the read is itself
    /// recorded there). Tenant principals have no way to this: it takes an
    /// authenticated operator.
    pub async fn list_platform(
        &self,
        operator: &OperatorPrincipal,
        filter: &AuditFilter,
        after: i64,
        limit: u32,
    ) -> Result<AuditPage> {
        let mut tx = self.store.platform().await?;
        let mut items = tx
            .audit()
            .list_audit(filter, after, i64::from(limit) + 1)
            .await?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.seq)
        } else {
            None
        };
        let read = Record::new("platform.audit.read");
        self.record_platform(&mut *tx, operator.actor(), read)
            .await?;
        tx.commit().await?;
        Ok(AuditPage { items, next_cursor })
    }

    /// Verifies the platform chain as [`AuditTrail::verify`] does a tenant's.
    pub async fn verify_platform(&self) -> Result<VerifyReport> {
        let mut tx = self.store.platform().await?;
        let report = self.verify_chain(tx.audit(), PLATFORM_CHAIN, None).await?;
        tx.commit().await?;
        Ok(report)
    }
}
