//! Appends are written in multi-row INSERTs at the latest at commit: a
//! transaction that appends more events than one INSERT holds reads its own
//! appends back (in order, as returned), rolls them all back when dropped, and
//! commits a chain that verifies.

use karen_app::audit::Record;
use karen_domain::audit::AuditFilter;
use karen_domain::ports::Store as _;
use karen_domain::{Actor, SystemReason, TenantId, TenantScope};
use karen_testkit::{Backend, spawn};

on_both_backends!(a_transaction_of_many_appends_reads_them_and_rolls_back_whole);

/// More than two INSERTs' worth, and not a power of two.
const EVENTS: usize = 75;

async fn a_transaction_of_many_appends_reads_them_and_rolls_back_whole(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("batch").await;
    let id = TenantId::from_uuid(tenant.id);
    let scope = TenantScope::system(id, SystemReason::Cli);
    let trail = app.karen.services.audit.clone();
    let actor = Actor::System(SystemReason::Cli);
    let before = trail.verify(scope).await.unwrap();
    assert!(before.ok(), "{before:?}");
    let head = before.last_seq.unwrap();

    for commit in [false, true] {
        let mut tx = app.karen.store.tenant(scope).await.unwrap();
        let mut appended = Vec::new();
        for n in 0..EVENTS {
            let record = Record::new("test.batch").target("batch", n);
            appended.push(trail.record(&mut *tx, actor, record).await.unwrap());
        }
        let read = tx
            .audit()
            .list_audit(&AuditFilter::default(), head, 1000)
            .await
            .unwrap();
        let links = |events: &[karen_domain::audit::AuditEvent]| {
            events
                .iter()
                .map(|e| (e.seq, e.prev_hash, e.hash, e.entry.target_id.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            links(&read),
            links(&appended),
            "the transaction reads its own appends"
        );
        let (last_seq, last_hash) = tx.audit().audit_head().await.unwrap().unwrap();
        assert_eq!(last_seq, head + i64::try_from(EVENTS).unwrap());
        assert_eq!(Some(last_hash), appended.last().map(|e| e.hash));
        if commit {
            tx.commit().await.unwrap();
        } else {
            drop(tx);
            let after = trail.verify(scope).await.unwrap();
            assert!(after.ok(), "{after:?}");
            assert_eq!(after.last_seq, Some(head), "a rollback leaves no event");
        }
    }
    let after = trail.verify(scope).await.unwrap();
    assert!(after.ok(), "{after:?}");
    assert_eq!(after.events, before.events + u64::try_from(EVENTS).unwrap());
    app.stop().await;
}
