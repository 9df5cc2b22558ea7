//! Per-tenant embedding models over HTTP, on both backends: a model the
//! platform does not offer is refused; a change records a re-embedding job
//! that a background worker runs, after which searches use the new model;
//! until then they use the old one (new entries go to both spaces); a job
//! interrupted by a restart resumes; other tenants are untouched.

use std::time::Duration;

use karen::config::Config;
use karen::indexes::EmbeddingSection;
use karen_domain::library::{EmbeddingJob, EmbeddingJobState};
use karen_domain::ports::{EntryKey, EntryKind, Store as _};
use karen_domain::{Clock as _, SystemReason, TenantId, TenantScope};
use karen_testkit::fake_llm::{FAKE_EMBEDDING_DIMENSIONS, FakeLlm};
use karen_testkit::{Backend, PASSWORD, TestApp, spawn_with};
use serde_json::{Value, json};

use crate::indexes::{fill, found};

const DEFAULT_MODEL: &str = "karen-offline-hash-384";
const OTHER_MODEL: &str = "fake-embed";

/// Offers a second embedding model, served by the fake upstream.
fn offer_a_second_model(fake: &FakeLlm, config: &mut Config) {
    config.llm.allow_private_addresses = vec![fake.address().to_string()];
    config.memory.embedders.push(EmbeddingSection {
        kind: "openai".into(),
        model: OTHER_MODEL.into(),
        base_url: Some(fake.base_url()),
        ..EmbeddingSection::default()
    });
}

/// Polls `GET /v1/tenant/index` until the newest job is in `state`.
async fn wait_for_job(app: &TestApp, token: &str, state: &str) -> Value {
    let mut body = Value::Null;
    for _ in 0..400 {
        let reply = app.get("/v1/tenant/index", token).await;
        body = reply.expect(200).body.clone();
        if body["job"]["state"] == state {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the job never reached {state}: {body}");
}

async fn models_of(app: &TestApp, tenant: uuid::Uuid) -> Vec<(String, u32)> {
    app.karen
        .indexes
        .vector
        .spaces(TenantId::from_uuid(tenant))
        .await
        .unwrap()
        .into_iter()
        .map(|space| (space.model, space.dims))
        .collect()
}

/// Waits until the tenant's vector spaces are `expected` (the worker drops
/// the old space just after the switch).
async fn wait_for_spaces(app: &TestApp, tenant: uuid::Uuid, expected: &[(&str, usize)]) {
    let expected: Vec<(String, u32)> = expected
        .iter()
        .map(|(model, dims)| ((*model).to_owned(), *dims as u32))
        .collect();
    let mut spaces = Vec::new();
    for _ in 0..100 {
        spaces = models_of(app, tenant).await;
        if spaces == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(spaces, expected);
}

async fn settings_with_model(app: &TestApp, token: &str, model: Value) -> Value {
    let tenant = app.get("/v1/tenant", token).await;
    let mut settings = tenant.expect(200).body["settings"].clone();
    settings["embedding_model"] = model;
    json!({ "settings": settings })
}

async fn changing_the_model_reembeds_then_switches_searches(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| offer_a_second_model(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    let (_, chunks) = fill(&app, &acme).await;
    fill(&app, &other).await;
    let owner = acme.owner_token.as_str();

    let state = app.get("/v1/tenant/index", owner).await;
    let state = state.expect(200);
    assert_eq!(state.str("embedding_model"), DEFAULT_MODEL);
    assert_eq!(state.body["dimensions"], 384);
    assert!(state.body["job"].is_null());
    assert!(state.body["requested_model"].is_null());
    assert_eq!(
        state.body["offered_models"],
        json!([DEFAULT_MODEL, OTHER_MODEL])
    );

    // A model the platform does not offer: refused, naming those it does.
    let body = settings_with_model(&app, owner, json!("gpt-embed-9000")).await;
    let refused = app.patch("/v1/tenant", owner, body).await;
    refused.expect_problem(422, "validation_failed");
    assert_eq!(refused.str("field"), "settings.embedding_model");
    assert!(
        refused.str("detail").contains(OTHER_MODEL),
        "{}",
        refused.text
    );
    let tenant = app.get("/v1/tenant", owner).await;
    assert!(tenant.expect(200).body["settings"]["embedding_model"].is_null());
    assert!(
        app.get("/v1/tenant/index", owner).await.body["job"].is_null(),
        "nothing recorded"
    );

    let body = settings_with_model(&app, owner, json!(OTHER_MODEL)).await;
    app.patch("/v1/tenant", owner, body.clone())
        .await
        .expect(200);
    let state = wait_for_job(&app, owner, "done").await;
    assert_eq!(state["embedding_model"], OTHER_MODEL);
    assert_eq!(state["dimensions"], FAKE_EMBEDDING_DIMENSIONS);
    assert_eq!(state["requested_model"], OTHER_MODEL);
    let job = &state["job"];
    assert_eq!(job["from_model"], DEFAULT_MODEL);
    assert_eq!(job["to_model"], OTHER_MODEL);
    assert_eq!(job["total"], 2 + chunks);
    assert_eq!(job["done"], 2 + chunks);
    assert_eq!(job["progress"], 1.0);
    // Only the new model's space is left; searches use it and still find.
    wait_for_spaces(&app, acme.id, &[(OTHER_MODEL, FAKE_EMBEDDING_DIMENSIONS)]).await;
    assert_eq!(found(&app, owner).await, (1, 1));
    let checked = karen::maintenance::check(
        &app.karen,
        Some("acme"),
        false,
        &karen_app::memory::NoProgress,
    )
    .await
    .unwrap();
    assert!(checked[0].1.is_clean(), "{:?}", checked[0].1);
    // New entries are embedded with the tenant's model.
    app.post(
        "/v1/memories",
        owner,
        json!({"content": "The zanzibar cafeteria serves lunch at noon"}),
    )
    .await
    .expect(201);
    assert_eq!(found(&app, owner).await, (2, 1));

    // Asking again for the same model records nothing new.
    app.patch("/v1/tenant", owner, body).await.expect(200);
    let again = app.get("/v1/tenant/index", owner).await;
    assert_eq!(again.expect(200).body["job"]["id"], job["id"]);

    // The other tenant kept its model and vectors.
    let theirs = app.get("/v1/tenant/index", &other.owner_token).await;
    let theirs = theirs.expect(200);
    assert_eq!(theirs.str("embedding_model"), DEFAULT_MODEL);
    assert!(theirs.body["job"].is_null());
    assert_eq!(
        models_of(&app, other.id).await,
        vec![(DEFAULT_MODEL.to_owned(), 384)]
    );

    // Back to the default (null): another job, then the default's space again.
    let body = settings_with_model(&app, owner, Value::Null).await;
    app.patch("/v1/tenant", owner, body).await.expect(200);
    let state = wait_for_job(&app, owner, "done").await;
    assert_eq!(state["embedding_model"], DEFAULT_MODEL);
    assert_ne!(state["job"]["id"], job["id"]);
    wait_for_spaces(&app, acme.id, &[(DEFAULT_MODEL, 384)]).await;
    assert_eq!(found(&app, owner).await, (2, 1));
    app.stop().await;
}

async fn an_interrupted_job_resumes_after_a_restart(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| offer_a_second_model(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (memories, chunks) = fill(&app, &acme).await;
    let id = TenantId::from_uuid(acme.id);
    // A job a crashed process was running: halfway, its lease still held by
    // that process (so this server's worker cannot take it either, however
    // late its first scan runs).
    let first = memories
        .iter()
        .map(|m| EntryKey::new(EntryKind::Memory, m.parse().unwrap()))
        .min()
        .unwrap();
    let now = app.clock.now();
    let job = EmbeddingJob {
        id: uuid::Uuid::now_v7(),
        tenant_id: id,
        from_model: DEFAULT_MODEL.into(),
        to_model: OTHER_MODEL.into(),
        state: EmbeddingJobState::Running,
        total: (2 + chunks) as u64,
        done: 1,
        cursor: Some(first),
        dims: None,
        attempts: 0,
        last_error: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    let mut tx = app
        .karen
        .store
        .tenant(TenantScope::system(id, SystemReason::Cli))
        .await
        .unwrap();
    tx.embedding_jobs().insert_job(&job).await.unwrap();
    let lease = Duration::from_secs(30);
    let claimed = tx
        .embedding_jobs()
        .claim_job(job.id, "worker-crashed", now + lease, now)
        .await
        .unwrap();
    assert!(claimed);
    tx.commit().await.unwrap();

    // Until the job is done, searches use the old model, and new entries
    // are written to both spaces.
    let owner = acme.owner_token.clone();
    let state = app.get("/v1/tenant/index", &owner).await;
    let state = state.expect(200);
    assert_eq!(state.str("embedding_model"), DEFAULT_MODEL);
    assert_eq!(state.body["job"]["state"], "running");
    app.post(
        "/v1/memories",
        &owner,
        json!({"content": "The zanzibar cafeteria serves lunch at noon"}),
    )
    .await
    .expect(201);
    let spaces = models_of(&app, acme.id).await;
    assert!(
        spaces.contains(&(DEFAULT_MODEL.to_owned(), 384)),
        "{spaces:?}"
    );
    assert!(
        spaces.contains(&(OTHER_MODEL.to_owned(), FAKE_EMBEDDING_DIMENSIONS as u32)),
        "{spaces:?}"
    );
    let space = app
        .karen
        .indexes
        .vector
        .spaces(id)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.model == OTHER_MODEL)
        .unwrap();
    assert_eq!(
        app.karen
            .indexes
            .vector
            .keys(id, &space)
            .await
            .unwrap()
            .len(),
        1,
        "only the new memory so far"
    );
    assert_eq!(found(&app, &owner).await, (2, 1));

    // A restart once the crashed process's lease has run out: the worker
    // finds the job, resumes after its cursor, fills in what the cursor
    // skipped, and switches.
    let app = app.restart_after(lease + Duration::from_secs(1)).await;
    let owner = app.token("acme", &acme.owner_email, PASSWORD).await;
    let state = wait_for_job(&app, &owner, "done").await;
    assert_eq!(state["embedding_model"], OTHER_MODEL);
    assert_eq!(state["job"]["id"], job.id.to_string());
    assert_eq!(state["job"]["attempts"], 2);
    assert_eq!(state["job"]["total"], 3 + chunks);
    wait_for_spaces(&app, acme.id, &[(OTHER_MODEL, FAKE_EMBEDDING_DIMENSIONS)]).await;
    let checked = karen::maintenance::check(
        &app.karen,
        Some("acme"),
        false,
        &karen_app::memory::NoProgress,
    )
    .await
    .unwrap();
    assert!(checked[0].1.is_clean(), "{:?}", checked[0].1);
    assert_eq!(found(&app, &owner).await, (2, 1));
    // Nothing left to run: running the worker again changes nothing.
    let worker = &app.karen.services.memory.reembed;
    assert_eq!(worker.run_tenant(id).await.unwrap(), None);
    assert_eq!(worker.run_all().await.unwrap(), 0);
    app.stop().await;
}

on_both_backends!(
    changing_the_model_reembeds_then_switches_searches,
    an_interrupted_job_resumes_after_a_restart
);
