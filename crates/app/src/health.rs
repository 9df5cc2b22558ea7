//! Readiness: is every store this process depends on answering?

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Deps;

/// `karen_ready`: 1 while the last readiness check passed and the server is
/// not draining (see `deploy/metrics.txt`).
pub const READY: &str = "karen_ready";

/// One dependency's state.
#[derive(Debug, Clone)]
pub struct ComponentHealth {
    pub name: &'static str,
    pub ok: bool,
    /// What failed (no secrets: driver messages only).
    pub detail: Option<String>,
}

/// The health service.
#[derive(Clone)]
pub struct HealthService {
    deps: Arc<Deps>,
    draining: Arc<AtomicBool>,
}

impl HealthService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self {
            deps,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the process as shutting down: readiness fails from now on, so a
    /// load balancer stops sending new requests while in-flight ones finish.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        metrics::gauge!(READY).set(0.0);
    }

    /// Whether the server is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Pings the SQL store and the cache, and reports whether the server is draining.
    pub async fn readiness(&self) -> Vec<ComponentHealth> {
        let (database, cache) = tokio::join!(self.deps.store.ping(), self.deps.counters.ping());
        let check = |name, result: karen_domain::Result<()>| ComponentHealth {
            name,
            ok: result.is_ok(),
            detail: result.err().map(|e| match e {
                karen_domain::Error::Unavailable { detail, .. } => detail,
                other => other.to_string(),
            }),
        };
        let draining = self.draining.load(Ordering::SeqCst);
        let server = ComponentHealth {
            name: "server",
            ok: !draining,
            detail: draining.then(|| "shutting down; finishing in-flight requests".to_owned()),
        };
        let components = vec![server, check("database", database), check("cache", cache)];
        let ready = components.iter().all(|c| c.ok);
        metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
        components
    }

    /// The SQL backend in use.
    pub fn backend(&self) -> &'static str {
        self.deps.store.backend()
    }
}
