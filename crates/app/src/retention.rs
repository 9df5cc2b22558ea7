//! Retention and legal hold: each tenant's policy (maximum ages, platform
//! defaults, an audit minimum it cannot go below), legal holds that keep data
//! regardless, and the enforcement that deletes what is older than the policy
//! through the same repository and index paths as a user's own deletion. A
//! run records what it deleted as counts (never content) in the audit trail.
//! Audit events go as a whole prefix of the chain, only up to a signed
//! checkpoint, so `karen audit verify` still passes afterwards.

use std::sync::Arc;

use karen_domain::audit::ActorRecord;
use karen_domain::permission::Permission;
use karen_domain::ports::{EntryKey, EntryKind, TenantTx};
use karen_domain::retention::{
    Expiring, HoldScope, Holds, LegalHold, RetentionCounts, RetentionPolicy, RetentionRun, cutoff,
    hold_reason,
};
use karen_domain::{
    ConversationId, DocumentId, Error, LegalHoldId, MemoryId, Result, SystemReason, TenantContext,
    TenantId, TenantScope, UsageId,
};
use serde::Serialize;

use crate::Deps;
use crate::audit::Record;
use crate::memory::{Indexer, delete_document_rows};

/// Rows read per query while looking for expired data.
const BATCH: i64 = 500;

/// The platform's retention rules (from configuration).
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionSettings {
    /// The policy of a tenant that has not set its own.
    pub defaults: RetentionPolicy,
    /// No tenant keeps audit events for less than this many days.
    pub audit_min_days: u32,
}

/// A tenant's policy as its admins see it.
#[derive(Debug, Clone)]
pub struct RetentionOverview {
    /// The policy in effect.
    pub policy: RetentionPolicy,
    /// Whether the tenant set it (otherwise it is the platform default).
    pub custom: bool,
    pub defaults: RetentionPolicy,
    pub audit_min_days: u32,
    pub last_run: Option<RetentionRun>,
}

/// What one enforcement did (or, dry, would do) for one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionReport {
    pub tenant_id: TenantId,
    pub dry_run: bool,
    pub counts: RetentionCounts,
    /// Why audit events older than the policy were kept, if they were.
    pub audit_skipped: Option<String>,
}

/// The retention service.
#[derive(Clone)]
pub struct RetentionService {
    deps: Arc<Deps>,
    indexer: Indexer,
}

impl RetentionService {
    pub(crate) fn new(deps: Arc<Deps>, indexer: Indexer) -> Self {
        Self { deps, indexer }
    }

    fn settings(&self) -> RetentionSettings {
        self.deps.retention
    }

    /// The tenant's policy, the platform's defaults and minimum, and the last run.
    pub async fn overview(&self, ctx: &TenantContext) -> Result<RetentionOverview> {
        ctx.require(Permission::TenantManage)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let own = tx.retention().retention_policy().await?;
        let last_run = tx.retention().last_retention_run().await?;
        tx.commit().await?;
        let settings = self.settings();
        Ok(RetentionOverview {
            policy: own.unwrap_or(settings.defaults),
            custom: own.is_some(),
            defaults: settings.defaults,
            audit_min_days: settings.audit_min_days,
            last_run,
        })
    }

    /// Replaces the tenant's policy (validated against the platform minimum).
    pub async fn set_policy(
        &self,
        ctx: &TenantContext,
        policy: RetentionPolicy,
    ) -> Result<RetentionOverview> {
        ctx.require(Permission::TenantManage)?;
        policy.validate(self.settings().audit_min_days)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let before = tx
            .retention()
            .retention_policy()
            .await?
            .unwrap_or(self.settings().defaults);
        tx.retention()
            .put_retention_policy(&policy, self.deps.clock.now())
            .await?;
        let audit = Record::new("retention.policy.update")
            .target("tenant", ctx.tenant_id())
            .before(&before)
            .after(&policy);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        self.overview(ctx).await
    }

    /// Places a legal hold; a user or conversation of another tenant is `not_found`.
    pub async fn set_hold(
        &self,
        ctx: &TenantContext,
        scope: HoldScope,
        reason: &str,
    ) -> Result<LegalHold> {
        ctx.require(Permission::TenantManage)?;
        let reason = hold_reason(reason)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        match scope {
            HoldScope::Tenant => {}
            HoldScope::User(user) => {
                tx.users()
                    .user_by_id(user)
                    .await?
                    .ok_or(Error::NotFound("user"))?;
            }
            HoldScope::Conversation(id) => {
                tx.conversations()
                    .conversation(id)
                    .await?
                    .ok_or(Error::NotFound("conversation"))?;
            }
        }
        let hold = LegalHold {
            id: LegalHoldId::generate(),
            tenant_id: ctx.tenant_id(),
            scope,
            reason,
            created_by: ActorRecord::label(ctx.scope().actor()),
            created_at: self.deps.clock.now(),
        };
        tx.retention().insert_hold(&hold).await?;
        let audit = Record::new("legal_hold.set")
            .target("legal_hold", hold.id)
            .after(&serde_json::json!({
                "scope": scope.as_str(),
                "target_id": scope.target_id(),
                "reason": hold.reason,
            }));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        Ok(hold)
    }

    /// The tenant's active holds, oldest first.
    pub async fn holds(&self, ctx: &TenantContext) -> Result<Vec<LegalHold>> {
        ctx.require(Permission::TenantManage)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let holds = tx.retention().active_holds().await?;
        tx.commit().await?;
        Ok(holds)
    }

    /// Lifts an active hold: the next run may delete what it kept.
    pub async fn lift_hold(&self, ctx: &TenantContext, id: LegalHoldId) -> Result<()> {
        ctx.require(Permission::TenantManage)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let hold = tx
            .retention()
            .active_hold(id)
            .await?
            .ok_or(Error::NotFound("legal hold"))?;
        let by = ActorRecord::label(ctx.scope().actor());
        tx.retention()
            .lift_hold(id, &by, self.deps.clock.now())
            .await?;
        let audit = Record::new("legal_hold.lift")
            .target("legal_hold", id)
            .before(&serde_json::json!({
                "scope": hold.scope.as_str(),
                "target_id": hold.scope.target_id(),
                "reason": hold.reason,
            }));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await
    }

    /// Enforces the caller's tenant's policy now (tenant admins).
    pub async fn run_for(&self, ctx: &TenantContext, dry_run: bool) -> Result<RetentionReport> {
        ctx.require(Permission::TenantManage)?;
        self.enforce(ctx.scope(), dry_run).await
    }

    /// Enforces one tenant's policy as the system job (schedule and CLI).
    pub async fn enforce_tenant(&self, tenant: TenantId, dry_run: bool) -> Result<RetentionReport> {
        self.enforce(
            TenantScope::system(tenant, SystemReason::Retention),
            dry_run,
        )
        .await
    }

    /// Deletes (or, dry, counts) everything older than the tenant's policy
    /// that no legal hold covers, in one transaction with its audit event.
    async fn enforce(&self, scope: TenantScope, dry_run: bool) -> Result<RetentionReport> {
        let tenant = scope.tenant_id();
        let settings = self.settings();
        let now = self.deps.clock.now();
        let policy = {
            let mut tx = self.deps.store.tenant_read(scope).await?;
            let own = tx.retention().retention_policy().await?;
            tx.commit().await?;
            own.unwrap_or(settings.defaults)
        };
        // Checked before anything is removed: a prefix is only dropped from
        // a chain that verifies, so the checkpoint signed for it is honest.
        let audit_days = policy.effective_audit_days(settings.audit_min_days);
        let chain_problem =
            match audit_days {
                Some(_) if !dry_run => {
                    self.deps.audit.verify(scope).await?.problem.map(|p| {
                        format!("the audit chain does not verify ({} at {})", p.kind, p.seq)
                    })
                }
                _ => None,
            };
        let mut tx = self.deps.store.tenant(scope).await?;
        let holds = Holds::of(&tx.retention().active_holds().await?);
        let mut report = RetentionReport {
            tenant_id: tenant,
            dry_run,
            counts: RetentionCounts::default(),
            audit_skipped: None,
        };
        let mut keys = Vec::new();
        for (kind, days) in policy.content_ages() {
            self.sweep(
                &mut *tx,
                &holds,
                kind,
                cutoff(now, days),
                &mut report,
                &mut keys,
            )
            .await?;
        }
        if let Some(days) = audit_days {
            report.audit_skipped = if holds.any() {
                // A prefix cannot leave out single events, and the trail is
                // the evidence of who did what with the held data.
                Some("a legal hold is active".into())
            } else if let Some(problem) = chain_problem {
                Some(problem)
            } else {
                self.audit_prefix(&mut *tx, cutoff(now, days), &mut report)
                    .await?
            };
        }
        if dry_run {
            return Ok(report);
        }
        self.indexer.remove(tenant, &keys).await?;
        let audit = Record::new("retention.enforced")
            .target("tenant", tenant)
            .after(&report.counts);
        self.deps.audit(&mut *tx, scope.actor(), audit).await?;
        tx.retention()
            .record_retention_run(&RetentionRun {
                at: now,
                counts: report.counts,
            })
            .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Deletes (or, dry, counts) the expired rows of `kind` no hold covers,
    /// collecting the index entries to remove.
    async fn sweep(
        &self,
        tx: &mut dyn TenantTx,
        holds: &Holds,
        kind: Expiring,
        before: time::OffsetDateTime,
        report: &mut RetentionReport,
        keys: &mut Vec<EntryKey>,
    ) -> Result<()> {
        let mut after = None;
        loop {
            let batch = tx.retention().expired(kind, before, after, BATCH).await?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = Some(last.id);
            for row in batch {
                if holds.covers(row.user_id, row.conversation_id) {
                    report.counts.held += 1;
                    continue;
                }
                if !report.dry_run {
                    delete_expired(tx, kind, row.id, keys).await?;
                }
                *report.counts.of_mut(kind) += 1;
            }
        }
    }

    /// Removes the prefix of the audit trail older than `before`, after
    /// making sure a signed checkpoint of its last event exists. Returns why
    /// it kept the events, if it did.
    async fn audit_prefix(
        &self,
        tx: &mut dyn TenantTx,
        before: time::OffsetDateTime,
        report: &mut RetentionReport,
    ) -> Result<Option<String>> {
        let Some(prefix) = tx.retention().audit_prefix_before(before).await? else {
            return Ok(None);
        };
        if report.dry_run {
            report.counts.audit_events = prefix.events;
            return Ok(None);
        }
        if !self
            .deps
            .audit
            .checkpoint_at(tx, prefix.through_seq, prefix.hash)
            .await?
        {
            return Ok(Some(
                "no audit signing key: a prefix is removed only after a signed checkpoint".into(),
            ));
        }
        report.counts.audit_events = tx.retention().drop_audit_prefix(prefix.through_seq).await?;
        Ok(None)
    }
}

/// Deletes one expired row the way a user's own deletion does.
async fn delete_expired(
    tx: &mut dyn TenantTx,
    kind: Expiring,
    id: uuid::Uuid,
    keys: &mut Vec<EntryKey>,
) -> Result<()> {
    match kind {
        Expiring::Conversations => {
            tx.conversations()
                .delete_conversation(ConversationId::from_uuid(id))
                .await?;
        }
        Expiring::Memories => {
            tx.memories().delete_memory(MemoryId::from_uuid(id)).await?;
            keys.push(EntryKey::new(EntryKind::Memory, id));
        }
        Expiring::Documents => {
            keys.extend(delete_document_rows(tx, DocumentId::from_uuid(id)).await?);
        }
        Expiring::Usage => {
            tx.retention()
                .delete_usage_record(UsageId::from_uuid(id))
                .await?;
        }
    }
    Ok(())
}
