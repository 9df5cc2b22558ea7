//! What the `karen audit` and `karen report` commands and the checkpoint timer
//! do: compliance reports, and, here too: verify the
//! chains and sign checkpoints of one tenant or all of them. Kept in the
//! library so that tests drive them directly.

use karen_app::Services;
use karen_app::audit::VerifyReport;
use karen_domain::audit::Checkpoint;
use karen_domain::page::{MAX_LIMIT, PageRequest};
use karen_domain::tenant::{Tenant, TenantStatus};
use karen_domain::{SystemReason, TenantId, TenantScope};

/// Every tenant that is not being deleted, or just `only`.
pub(crate) async fn tenants(
    services: &Services,
    only: Option<TenantId>,
) -> anyhow::Result<Vec<Tenant>> {
    if let Some(id) = only {
        return Ok(vec![services.tenants.get(id).await?]);
    }
    let mut all = Vec::new();
    let mut page = PageRequest {
        after: None,
        limit: MAX_LIMIT,
    };
    loop {
        let batch = services.tenants.list(&page).await?;
        all.extend(
            batch
                .items
                .into_iter()
                .filter(|t| t.status != TenantStatus::Deleting),
        );
        match batch.next_cursor {
            Some(cursor) => page.after = Some(cursor.parse()?),
            None => break,
        }
    }
    Ok(all)
}

fn scope(tenant: TenantId) -> TenantScope {
    TenantScope::system(tenant, SystemReason::Cli)
}

/// Verifies the chain of `only`, or of every tenant.
pub async fn verify(
    services: &Services,
    only: Option<TenantId>,
) -> anyhow::Result<Vec<(Tenant, VerifyReport)>> {
    let mut reports = Vec::new();
    for tenant in tenants(services, only).await? {
        let report = services.audit.verify(scope(tenant.id)).await?;
        reports.push((tenant, report));
    }
    Ok(reports)
}

/// Verifies the platform chain (operator actions outside any tenant).
pub async fn verify_platform(services: &Services) -> anyhow::Result<VerifyReport> {
    Ok(services.audit.verify_platform().await?)
}

/// Signs a checkpoint of each tenant (or `only`) whose trail grew since its
/// newest checkpoint, and, when no tenant is named, of the platform chain;
/// returns those written (the platform's under `audit::PLATFORM_CHAIN`).
pub async fn checkpoint_all(
    services: &Services,
    only: Option<TenantId>,
) -> anyhow::Result<Vec<Checkpoint>> {
    let mut written = Vec::new();
    if only.is_none()
        && let Some(checkpoint) = services.audit.checkpoint_platform().await?
    {
        written.push(checkpoint);
    }
    for tenant in tenants(services, only).await? {
        if let Some(checkpoint) = services.audit.checkpoint(scope(tenant.id)).await? {
            written.push(checkpoint);
        }
    }
    Ok(written)
}

/// The compliance report of `only`, or of every tenant.
pub async fn compliance_reports(
    services: &Services,
    only: Option<TenantId>,
    framework: karen_app::compliance::Framework,
) -> anyhow::Result<Vec<karen_app::compliance::Report>> {
    let mut reports = Vec::new();
    for tenant in tenants(services, only).await? {
        reports.push(
            services
                .compliance
                .report(scope(tenant.id), framework)
                .await?,
        );
    }
    Ok(reports)
}
