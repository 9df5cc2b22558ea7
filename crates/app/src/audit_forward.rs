//! Forwarding of the audit trail to external collectors (syslog, webhook).
//!
//! The trail in the store is the record; collectors receive copies. A
//! background task reads each tenant's events after the collector's cursor
//! (`audit_forwarded`), delivers them in order and moves the cursor only
//! once the collector accepted them. The request path never waits for a
//! collector, an unreachable one loses nothing (its cursor stays), and a
//! restart resumes where delivery stopped. Delivery is at least once:
//! collectors deduplicate by tenant and sequence number.

use std::sync::Arc;
use std::time::Duration;

use karen_domain::audit::AuditFilter;
use karen_domain::clock::Clock;
use karen_domain::ports::{AuditSink, Store};
use karen_domain::{Result, SystemReason, TenantId, TenantScope};

use crate::tenants::all_tenant_ids;

/// Events delivered, by sink.
pub const FORWARDED_METRIC: &str = "karen_audit_forwarded_total";
/// Failed deliveries (each retried later), by sink.
pub const FORWARD_FAILURES_METRIC: &str = "karen_audit_forward_failures_total";
/// Events not yet accepted by a sink, over all tenants, after the last round.
pub const FORWARD_LAG_METRIC: &str = "karen_audit_forward_lag_events";

/// How forwarding runs.
#[derive(Debug, Clone, Copy)]
pub struct ForwardPolicy {
    /// Events per delivery.
    pub batch: u32,
    /// Pause between rounds while collectors accept.
    pub interval: Duration,
    /// The longest pause after failures (pauses double from `interval`).
    pub max_backoff: Duration,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardRound {
    /// Events accepted by collectors.
    pub delivered: u64,
    /// Deliveries that failed: (tenant, sink, error), retried next round.
    pub failures: Vec<(TenantId, &'static str, String)>,
    /// Events still waiting, over every tenant and sink.
    pub lag: u64,
}

/// Sends every tenant's audit events to the configured collectors.
#[derive(Clone)]
pub struct AuditForwarder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sinks: Vec<Arc<dyn AuditSink>>,
    policy: ForwardPolicy,
}

fn scope(tenant: TenantId) -> TenantScope {
    TenantScope::system(tenant, SystemReason::AuditForwarding)
}

impl AuditForwarder {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        sinks: Vec<Arc<dyn AuditSink>>,
        policy: ForwardPolicy,
    ) -> Self {
        Self {
            store,
            clock,
            sinks,
            policy,
        }
    }

    /// Delivers what `sink` has not accepted yet of one tenant's trail;
    /// returns how many events it accepted, and leaves in `waiting` how many
    /// it has still to accept (read with each batch, so a round costs no
    /// extra query). Stops at the first failure, keeping what was accepted
    /// before it.
    async fn forward_tenant(
        &self,
        tenant: TenantId,
        sink: &dyn AuditSink,
        waiting: &mut u64,
    ) -> Result<u64> {
        let limit = i64::from(self.policy.batch.max(1));
        let mut delivered = 0;
        loop {
            let mut tx = self.store.tenant_read(scope(tenant)).await?;
            let after = tx.audit().forwarded_up_to(sink.name()).await?;
            let head = tx.audit().audit_head().await?.map_or(0, |(seq, _)| seq);
            *waiting = u64::try_from(head - after).unwrap_or(0);
            let events = tx
                .audit()
                .list_audit(&AuditFilter::default(), after, limit)
                .await?;
            tx.commit().await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                return Ok(delivered);
            };
            sink.deliver(tenant, &events).await?;
            let mut tx = self.store.tenant(scope(tenant)).await?;
            tx.audit()
                .set_forwarded_up_to(sink.name(), last, self.clock.now())
                .await?;
            tx.commit().await?;
            let count = events.len() as u64;
            delivered += count;
            *waiting = waiting.saturating_sub(count);
            metrics::counter!(FORWARDED_METRIC, "sink" => sink.name()).increment(count);
            if events.len() < self.policy.batch.max(1) as usize {
                return Ok(delivered);
            }
        }
    }

    /// One round over every tenant and collector.
    pub async fn forward_all(&self) -> Result<ForwardRound> {
        let mut round = ForwardRound::default();
        if self.sinks.is_empty() {
            return Ok(round);
        }
        let tenants = all_tenant_ids(self.store.as_ref()).await?;
        for sink in &self.sinks {
            // Registered up front, so that both series exist from the first round.
            let failures = metrics::counter!(FORWARD_FAILURES_METRIC, "sink" => sink.name());
            metrics::counter!(FORWARDED_METRIC, "sink" => sink.name()).increment(0);
            let mut lag = 0;
            for &tenant in &tenants {
                let mut waiting = 0;
                match self
                    .forward_tenant(tenant, sink.as_ref(), &mut waiting)
                    .await
                {
                    Ok(delivered) => round.delivered += delivered,
                    Err(error) => {
                        failures.increment(1);
                        round
                            .failures
                            .push((tenant, sink.name(), error.to_string()));
                    }
                }
                lag += waiting;
            }
            metrics::gauge!(FORWARD_LAG_METRIC, "sink" => sink.name()).set(lag as f64);
            round.lag += lag;
        }
        Ok(round)
    }

    /// Runs rounds forever: every `interval` while collectors accept, with
    /// doubling pauses (up to `max_backoff`) while one fails.
    pub async fn run(&self) {
        let mut pause = self.policy.interval;
        loop {
            tokio::time::sleep(pause).await;
            let started = std::time::Instant::now();
            let failed = match self.forward_all().await {
                Ok(round) => {
                    for (tenant, sink, error) in &round.failures {
                        tracing::warn!(tenant_id = %tenant, sink, %error, "forwarding audit events failed; retrying later");
                    }
                    !round.failures.is_empty()
                }
                Err(error) => {
                    tracing::warn!(%error, "reading audit events to forward failed");
                    true
                }
            };
            crate::telemetry::job_finished("audit_forward", !failed, started.elapsed());
            pause = if failed {
                (pause * 2).min(self.policy.max_backoff.max(self.policy.interval))
            } else {
                self.policy.interval
            };
        }
    }
}
