//! A tenant's usage, filterable by period, user, key and model.

use crate::audit::Record;
use std::sync::Arc;

use karen_domain::chat::UsageRecord;
use karen_domain::page::{Page, PageRequest};
use karen_domain::permission::Permission;
use karen_domain::ports::{UsageFilter, UsageTotals};
use karen_domain::{Result, TenantContext};

use crate::Deps;

/// A usage query.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub filter: UsageFilter,
    pub page: PageRequest,
}

/// The usage service.
#[derive(Clone)]
pub struct UsageService {
    deps: Arc<Deps>,
}

impl UsageService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// Matching records (oldest first) and their totals.
    pub async fn query(
        &self,
        ctx: &TenantContext,
        query: &UsageQuery,
    ) -> Result<(Page<UsageRecord>, UsageTotals)> {
        ctx.require(Permission::UsageRead)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let rows = tx
            .usage()
            .list_usage(&query.filter, query.page.after, query.page.fetch_limit())
            .await?;
        let totals = tx.usage().usage_totals(&query.filter).await?;
        tx.commit().await?;
        self.deps
            .audit_read(ctx.scope(), Record::new("usage.read"))
            .await?;
        Ok((
            Page::from_rows(rows, &query.page, |r| r.id.as_uuid()),
            totals,
        ))
    }
}
