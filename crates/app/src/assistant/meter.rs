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
//!
//! The rows of budget reservations go the same way, but nobody waits for
//! them: a call holds its budget in the running totals (see `budgets`) and
//! goes ahead while its row waits for the next batch. A call that settles
//! before its row was written cancels it (the row is never written); one
//! that settles while its row is being written (in its own transaction, on
//! PostgreSQL) leaves it to be deleted right after that batch.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use karen_domain::chat::UsageRecord;
use karen_domain::ports::Reservation;
use karen_domain::{Actor, Error, ReservationId, Result, SystemReason, TenantId, TenantScope};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::budgets::Held;
use crate::{Deps, audit};

/// Jobs waiting for the writer, at most (then callers wait).
const QUEUE_CAPACITY: usize = 4096;
/// Jobs committed in one batch, at most.
const MAX_BATCH: usize = 512;

/// What the writer commits.
enum Job {
    /// The row of a reservation just held in the budgets' running totals
    /// (nobody waits for it; skipped if its call settles first).
    Reserve {
        reservation: Reservation,
        held: Arc<Held>,
    },
    /// A settled call.
    Settle(Box<Settlement>),
}

impl Job {
    fn tenant(&self) -> TenantId {
        match self {
            Job::Reserve { reservation, .. } => reservation.tenant_id,
            Job::Settle(settlement) => settlement.record.tenant_id,
        }
    }
}

/// One settled call: its usage record replaces its reservation, and its
/// audit event is appended in the same transaction. The answer says whether
/// the record was written (`false`: the reservation had been reconciled).
struct Settlement {
    held: Option<Arc<Held>>,
    record: UsageRecord,
    event: (Actor, audit::Record),
    /// The request the call came in, for its audit event.
    request: audit::RequestInfo,
    done: oneshot::Sender<Result<bool>>,
}

/// The handle calls send their usage to (cheap to clone).
#[derive(Clone)]
pub(crate) struct UsageWriter {
    sender: mpsc::Sender<Job>,
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

    /// Queues a reservation's row; returns at once (waits only when the
    /// queue is full).
    pub(crate) async fn reserve(&self, reservation: Reservation, held: Arc<Held>) -> Result<()> {
        self.sender
            .send(Job::Reserve { reservation, held })
            .await
            .map_err(|_| stopped())
    }

    /// Records the call durably: returns once its batch committed, with
    /// whether its record was written.
    pub(crate) async fn write(
        &self,
        held: Option<Arc<Held>>,
        record: UsageRecord,
        event: (Actor, audit::Record),
    ) -> Result<bool> {
        let (done, acknowledged) = oneshot::channel();
        let settlement = Settlement {
            held,
            record,
            event,
            request: audit::current_request(),
            done,
        };
        self.sender
            .send(Job::Settle(Box::new(settlement)))
            .await
            .map_err(|_| stopped())?;
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

async fn run(deps: Arc<Deps>, mut receiver: mpsc::Receiver<Job>, mut stop: watch::Receiver<bool>) {
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
async fn commit(deps: &Deps, mut batch: Vec<Job>) {
    // Stable: a reservation stays before the settlement of its call.
    batch.sort_by_key(Job::tenant);
    while !batch.is_empty() {
        let tenant = batch[0].tenant();
        let split = batch
            .iter()
            .position(|job| job.tenant() != tenant)
            .unwrap_or(batch.len());
        let rest = batch.split_off(split);
        let mut rows = Vec::new();
        let mut settlements = Vec::new();
        for job in batch {
            match job {
                Job::Reserve { reservation, held } => rows.push((reservation, held)),
                Job::Settle(settlement) => settlements.push(*settlement),
            }
        }
        let result = commit_tenant(deps, tenant, &rows, &settlements).await;
        if let Err(error) = &result {
            tracing::error!(%error, tenant_id = %tenant, calls = settlements.len(), reservations = rows.len(),
                "could not record the usage of a batch of calls");
        }
        for (settlement, index) in settlements.into_iter().zip(0..) {
            let answer = match &result {
                Ok((recorded, _)) => Ok(recorded.get(index).copied().unwrap_or(true)),
                Err(error) => Err(shared(error)),
            };
            // A caller that went away no longer waits; its record is committed or not like the others'.
            let _ = settlement.done.send(answer);
        }
        if let Ok((_, leftover)) = result
            && !leftover.is_empty()
            && let Err(error) = delete_leftovers(deps, tenant, &leftover).await
        {
            tracing::error!(%error, tenant_id = %tenant, "could not delete the rows of reservations settled while they were written; they are reconciled when they expire");
        }
        batch = rest;
    }
}

/// Commits the reservation rows and settled calls of one tenant. Returns,
/// for each settlement, whether its record was written, and the reservations
/// whose calls settled (elsewhere) while their rows were being written.
async fn commit_tenant(
    deps: &Deps,
    tenant: TenantId,
    rows: &[(Reservation, Arc<Held>)],
    settlements: &[Settlement],
) -> Result<(Vec<bool>, Vec<ReservationId>)> {
    // The settled calls decide first: a reservation still queued (in this
    // batch) is never written, one written earlier is deleted.
    let claimed: Vec<bool> = settlements
        .iter()
        .map(|s| s.held.as_ref().is_some_and(|held| held.claim_row()))
        .collect();
    let mut tx = match deps
        .store
        .tenant(TenantScope::system(tenant, SystemReason::Metering))
        .await
    {
        Ok(tx) => tx,
        Err(error) => {
            for (_, held) in rows {
                // Not written; its call records its usage without deleting anything.
                if held.begin_write() {
                    held.written(false);
                }
            }
            return Err(error);
        }
    };
    let writing: Vec<&(Reservation, Arc<Held>)> =
        rows.iter().filter(|(_, held)| held.begin_write()).collect();
    let written = async {
        if !writing.is_empty() {
            let new: Vec<Reservation> = writing.iter().map(|(r, _)| r.clone()).collect();
            tx.budgets().insert_reservations(&new).await?;
        }
        let to_delete: Vec<ReservationId> = settlements
            .iter()
            .zip(&claimed)
            .filter(|(_, claimed)| **claimed)
            .filter_map(|(s, _)| s.held.as_ref().map(|held| held.id()))
            .collect();
        let deleted: HashSet<ReservationId> = if to_delete.is_empty() {
            HashSet::new()
        } else {
            tx.budgets()
                .delete_reservations(&to_delete)
                .await?
                .into_iter()
                .collect()
        };
        let recorded: Vec<bool> = settlements
            .iter()
            .zip(&claimed)
            .map(|(s, claimed)| match &s.held {
                Some(held) if *claimed => deleted.contains(&held.id()),
                _ => true,
            })
            .collect();
        if recorded.iter().any(|r| !r) {
            // The reservation outlived its time to live and was already turned
            // into a usage record: recording the call again would charge it twice.
            tracing::warn!(tenant_id = %tenant, "a call settled after its reservation was reconciled");
        }
        let records: Vec<UsageRecord> = settlements
            .iter()
            .zip(&recorded)
            .filter(|(_, recorded)| **recorded)
            .map(|(s, _)| s.record.clone())
            .collect();
        tx.usage().insert_usage_batch(&records).await?;
        for settlement in settlements {
            let (actor, event) = settlement.event.clone();
            audit::with_request(
                settlement.request.clone(),
                deps.audit(&mut *tx, actor, event),
            )
            .await?;
        }
        tx.commit().await?;
        Ok::<_, Error>(recorded)
    }
    .await;
    let committed = written.is_ok();
    let leftover = writing
        .iter()
        .filter(|(_, held)| held.written(committed))
        .map(|(reservation, _)| reservation.id)
        .collect();
    written.map(|recorded| (recorded, leftover))
}

/// Deletes rows written for calls that settled meanwhile (their records are
/// already committed by the call's own transaction).
async fn delete_leftovers(deps: &Deps, tenant: TenantId, ids: &[ReservationId]) -> Result<()> {
    let mut tx = deps
        .store
        .tenant(TenantScope::system(tenant, SystemReason::Metering))
        .await?;
    tx.budgets().delete_reservations(ids).await?;
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
