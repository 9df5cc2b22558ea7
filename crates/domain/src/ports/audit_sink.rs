//! An external collector that receives copies of the audit trail (a SIEM
//! behind syslog, an HTTPS webhook). Forwarding runs apart from the request
//! path: the trail in the store is the record, a collector gets copies.

use async_trait::async_trait;

use crate::audit::AuditEvent;
use crate::{Result, TenantId};

/// A collector of audit events.
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// A short, stable name (`webhook`, `syslog`): the forwarding cursor's
    /// key and the metrics label.
    fn name(&self) -> &'static str;

    /// Delivers one tenant's events, oldest first. `Ok` means the collector
    /// accepted every one of them; on error the same events are offered
    /// again later (delivery is at least once: collectors deduplicate by
    /// tenant and sequence number).
    async fn deliver(&self, tenant: TenantId, events: &[AuditEvent]) -> Result<()>;
}
