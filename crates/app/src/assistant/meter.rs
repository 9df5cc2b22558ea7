//! The usage writer: group commit of settled model calls.
//!
//! A call that ends sends its usage record (and the reservation it replaces,
//! if any) to one writer task per process and waits for the acknowledgement
//! before its response completes, so a record is committed before the client
//! sees the answer — as durable as writing it in the request's own
//! transaction. The writer commits whatever queued while the previous batch
//! was committing in one transaction per tenant: under load many calls share
//! one commit and one statement of each kind. The queue is bounded (callers
//! wait when it is full); a failed batch fails each of its calls; on shutdown
//! the writer stops taking calls and commits what is queued.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use karen_domain::chat::UsageRecord;
use karen_domain::{Actor, Error, ReservationId, Result, SystemReason, TenantId, TenantScope};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::{Deps, audit};

/// Settled calls waiting for the writer, at most (then callers wait).
const QUEUE_CAPACITY: usize = 4096;
/// Calls committed in one batch, at most.
const MAX_BATCH: usize = 512;

/// One settled call: its usage record replaces its reservation, and its
/// audit event is appended in the same transaction.
struct Settlement {
    reservation: Option<ReservationId>,
    record: UsageRecord,
    event: (Actor, audit::Record),
    /// The request the call came in, for its audit event.
    request: audit::RequestInfo,
    done: oneshot::Sender<Result<()>>,
}

/// The handle calls send their usage to (cheap to clone).
#[derive(Clone)]
pub(crate) struct UsageWriter {
    sender: mpsc::Sender<Settlement>,
    stop: Arc<watch::Sender<bool>>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl UsageWriter {
    /// Starts the writer task (needs a Tokio runtime).
    pub(crate) fn start(deps: Arc<Deps>) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(deps, receiver, stopped));
        Self {
            sender,
            stop: Arc::new(stop),
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Records the call durably: returns once its batch committed.
    pub(crate) async fn write(
        &self,
        reservation: Option<ReservationId>,
        record: UsageRecord,
        event: (Actor, audit::Record),
    ) -> Result<()> {
        let (done, acknowledged) = oneshot::channel();
        let settlement = Settlement {
            reservation,
            record,
            event,
            request: audit::current_request(),
            done,
        };
        self.sender.send(settlement).await.map_err(|_| stopped())?;
        acknowledged.await.map_err(|_| stopped())?
    }

    /// Stops taking calls, commits those queued and waits for the writer to end.
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::error!(%error, "the usage writer failed");
        }
    }
}

fn stopped() -> Error {
    Error::Unavailable {
        component: "usage writer",
        detail: "the server is shutting down".into(),
    }
}

async fn run(
    deps: Arc<Deps>,
    mut receiver: mpsc::Receiver<Settlement>,
    mut stop: watch::Receiver<bool>,
) {
    let mut stopping = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = if stopping {
            receiver.recv_many(&mut batch, MAX_BATCH).await
        } else {
            tokio::select! {
                received = receiver.recv_many(&mut batch, MAX_BATCH) => received,
                changed = stop.changed() => {
                    // Senders now fail; what is queued is still received.
                    if changed.is_err() || *stop.borrow() {
                        receiver.close();
                        stopping = true;
                    }
                    continue;
                }
            }
        };
        if received == 0 {
            return;
        }
        commit(&deps, std::mem::take(&mut batch)).await;
    }
}

/// Commits a batch, one transaction per tenant, and answers every call of it.
async fn commit(deps: &Deps, mut batch: Vec<Settlement>) {
    batch.sort_by_key(|settlement| settlement.record.tenant_id);
    while !batch.is_empty() {
        let tenant = batch[0].record.tenant_id;
        let split = batch
            .iter()
            .position(|s| s.record.tenant_id != tenant)
            .unwrap_or(batch.len());
        let rest = batch.split_off(split);
        let result = commit_tenant(deps, tenant, &batch).await;
        if let Err(error) = &result {
            tracing::error!(%error, tenant_id = %tenant, calls = batch.len(), "could not record the usage of a batch of calls");
        }
        for settlement in batch {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(shared(error)),
            };
            // A caller that went away no longer waits; its record is committed or not like the others'.
            let _ = settlement.done.send(answer);
        }
        batch = rest;
    }
}

async fn commit_tenant(deps: &Deps, tenant: TenantId, batch: &[Settlement]) -> Result<()> {
    let mut tx = deps
        .store
        .tenant(TenantScope::system(tenant, SystemReason::Metering))
        .await?;
    let reservations: Vec<ReservationId> = batch.iter().filter_map(|s| s.reservation).collect();
    let settled: HashSet<ReservationId> = if reservations.is_empty() {
        HashSet::new()
    } else {
        tx.budgets()
            .delete_reservations(&reservations)
            .await?
            .into_iter()
            .collect()
    };
    let records: Vec<UsageRecord> = batch
        .iter()
        .filter(|s| match s.reservation {
            None => true,
            Some(reservation) if settled.contains(&reservation) => true,
            Some(_) => {
                // The reservation outlived its time to live and was already turned
                // into a usage record: recording the call again would charge it twice.
                tracing::warn!(tenant_id = %tenant, "a call settled after its reservation was reconciled");
                false
            }
        })
        .map(|s| s.record.clone())
        .collect();
    tx.usage().insert_usage_batch(&records).await?;
    for settlement in batch {
        let (actor, event) = settlement.event.clone();
        audit::with_request(
            settlement.request.clone(),
            deps.audit(&mut *tx, actor, event),
        )
        .await?;
    }
    tx.commit().await
}

/// The error each call of a failed batch gets.
fn shared(error: &Error) -> Error {
    match error {
        Error::Unavailable { component, detail } => Error::Unavailable {
            component,
            detail: detail.clone(),
        },
        other => Error::internal(format!("recording usage: {other}")),
    }
}
