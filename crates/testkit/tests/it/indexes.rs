//! `karen index rebuild` and `karen index check` (through the library
//! functions the commands call), on both backends: losing a tenant's index
//! files (embedded) or entries (Milvus, PostgreSQL) and rebuilding them from
//! the SQL store; drift reported per index and repaired; other tenants left
//! alone.

use karen_app::memory::NoProgress;
use karen_domain::TenantId;
use karen_domain::ports::{EntryAccess, EntryKey, EntryKind, TextEntry, VectorEntry};
use karen_testkit::{Backend, TestApp, TestTenant, spawn};
use serde_json::{Value, json};
use uuid::Uuid;

/// Gives `tenant` memories and a document; returns the memory ids and the
/// number of the document's passages.
pub(crate) async fn fill(app: &TestApp, tenant: &TestTenant) -> (Vec<String>, usize) {
    let owner = tenant.owner_token.as_str();
    let mut ids = Vec::new();
    for content in [
        "The zanzibar office opens at nine",
        "Quarterly reports go to the finance team",
    ] {
        let reply = app
            .post("/v1/memories", owner, json!({"content": content}))
            .await;
        ids.push(reply.expect(201).str("id").to_owned());
    }
    let handbook = "# Badges\n\nBadges are issued by the front desk of the zanzibar office.\n\n\
        ## Parking\n\nParking permits come from facilities.";
    let document = app
        .upload(
            owner,
            "?file_name=handbook.md",
            "text/markdown",
            handbook.into(),
        )
        .await;
    let chunks = document.expect(201).body["chunk_count"].as_u64().unwrap();
    (ids, chunks as usize)
}

/// What a search for `zanzibar office` finds that mentions zanzibar:
/// (memories, passages).
pub(crate) async fn found(app: &TestApp, token: &str) -> (usize, usize) {
    let reply = app
        .post(
            "/v1/search",
            token,
            json!({"query": "zanzibar office", "limit": 10}),
        )
        .await;
    let reply = reply.expect(200);
    let count = |key: &str, field: &str| {
        reply.body[key].as_array().map_or(0, |items| {
            items
                .iter()
                .filter(|item| {
                    item.pointer(field)
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.contains("zanzibar"))
                })
                .count()
        })
    };
    (
        count("memories", "/memory/content"),
        count("passages", "/text"),
    )
}

fn entries(report: &karen_app::memory::CheckReport) -> (usize, usize, usize, usize) {
    (
        report.text.missing.len(),
        report.text.orphaned.len(),
        report.vector.missing.len(),
        report.vector.orphaned.len(),
    )
}

async fn rebuild_restores_search_after_the_index_is_lost(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    let (_, chunks) = fill(&app, &acme).await;
    fill(&app, &other).await;
    let entries_held = 2 + chunks;
    let owner = acme.owner_token.clone();
    assert_eq!(found(&app, &owner).await, (1, 1));
    let checked = karen::maintenance::check(&app.karen, Some("acme"), false, &NoProgress)
        .await
        .unwrap();
    assert!(checked[0].1.is_clean(), "{:?}", checked[0].1);
    assert_eq!(checked[0].1.entries as usize, entries_held);

    // Lose acme's indexes: its files on disk (embedded; after a restart, so
    // nothing holds them open), its entries in Milvus and PostgreSQL.
    let app = match backend {
        Backend::Sqlite => {
            let app = app.restart().await;
            let dir = app.data_dir.join("tenants").join(acme.id.to_string());
            for index in ["vectors", "text"] {
                std::fs::remove_dir_all(dir.join(index)).unwrap();
            }
            app
        }
        Backend::Postgres => {
            let id = TenantId::from_uuid(acme.id);
            app.karen.indexes.vector.purge_tenant(id).await.unwrap();
            app.karen.indexes.text.purge_tenant(id).await.unwrap();
            app
        }
    };
    let owner = app
        .token("acme", &acme.owner_email, karen_testkit::PASSWORD)
        .await;
    assert_eq!(found(&app, &owner).await, (0, 0));
    let checked = karen::maintenance::check(&app.karen, Some("acme"), false, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        entries(&checked[0].1),
        (entries_held, 0, entries_held, 0),
        "{:?}",
        checked[0].1
    );

    let rebuilt = karen::maintenance::rebuild(&app.karen, Some("acme"), &NoProgress)
        .await
        .unwrap();
    let report = &rebuilt[0].1;
    assert_eq!(
        (
            report.memories,
            report.chunks as usize,
            report.vectors as usize
        ),
        (2, chunks, entries_held)
    );
    assert_eq!(report.embedded, 0, "every vector came from the cache");
    assert_eq!(found(&app, &owner).await, (1, 1));
    // Every tenant: acme is clean now, the other tenant was never touched.
    let checked = karen::maintenance::check(&app.karen, None, false, &NoProgress)
        .await
        .unwrap();
    assert_eq!(checked.len(), 2);
    assert!(checked.iter().all(|(_, r)| r.is_clean()), "{checked:?}");
    let other_owner = app
        .token("other", &other.owner_email, karen_testkit::PASSWORD)
        .await;
    assert_eq!(found(&app, &other_owner).await, (1, 1));
    app.stop().await;
}

async fn check_reports_drift_and_repairs_it(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    let (memories, chunks) = fill(&app, &acme).await;
    fill(&app, &other).await;
    let id = TenantId::from_uuid(acme.id);
    let indexes = &app.karen.indexes;
    // One entry gone from both indexes, one orphan (no row) in both.
    let lost = EntryKey::new(EntryKind::Memory, Uuid::parse_str(&memories[0]).unwrap());
    indexes.vector.remove(id, &[lost]).await.unwrap();
    indexes.text.remove(id, &[lost]).await.unwrap();
    let orphan = EntryKey::new(EntryKind::Memory, Uuid::now_v7());
    let space = indexes.vector.spaces(id).await.unwrap().remove(0);
    let mut vector = vec![0.0; space.dims as usize];
    vector[0] = 1.0;
    indexes
        .vector
        .upsert(
            id,
            &space,
            vec![VectorEntry {
                key: orphan,
                access: EntryAccess::default(),
                vector,
            }],
        )
        .await
        .unwrap();
    indexes
        .text
        .upsert(
            id,
            vec![TextEntry {
                key: orphan,
                access: EntryAccess::default(),
                text: "a zanzibar orphan".into(),
            }],
        )
        .await
        .unwrap();

    let checked = karen::maintenance::check(&app.karen, Some("acme"), false, &NoProgress)
        .await
        .unwrap();
    let report = &checked[0].1;
    assert_eq!(entries(report), (1, 1, 1, 1), "{report:?}");
    assert_eq!(report.text.missing, vec![lost]);
    assert_eq!(report.vector.orphaned, vec![orphan]);
    assert!(!report.repaired);
    // The other tenant shows none of it.
    let checked = karen::maintenance::check(&app.karen, Some("other"), false, &NoProgress)
        .await
        .unwrap();
    assert!(checked[0].1.is_clean(), "{:?}", checked[0].1);

    let repaired = karen::maintenance::check(&app.karen, Some("acme"), true, &NoProgress)
        .await
        .unwrap();
    assert!(repaired[0].1.repaired);
    let checked = karen::maintenance::check(&app.karen, Some("acme"), false, &NoProgress)
        .await
        .unwrap();
    assert!(checked[0].1.is_clean(), "{:?}", checked[0].1);
    let owner = acme.owner_token.as_str();
    let reply = app
        .post(
            "/v1/memories/search",
            owner,
            json!({"query": "when does the zanzibar office open?"}),
        )
        .await;
    let reply = reply.expect(200);
    let ids: Vec<&Value> = reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["memory"]["id"])
        .collect();
    assert!(ids.contains(&&json!(memories[0])), "{}", reply.text);
    assert_eq!(
        indexes.text.keys(id).await.unwrap().len(),
        2 + chunks,
        "the orphan is gone, the lost entry is back"
    );
    app.stop().await;
}

on_both_backends!(
    rebuild_restores_search_after_the_index_is_lost,
    check_reports_drift_and_repairs_it
);
