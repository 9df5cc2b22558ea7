//! Memories and documents over HTTP on both backends: who may see and change
//! what within a tenant, deduplication, hybrid search, and refusals that
//! leave nothing stored.

use karen_testkit::{Backend, spawn};
use serde_json::json;

async fn memories_are_private_or_shared(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let (_, ada) = app.create_user(&tenant, "ada@acme.test", &["member"]).await;
    let (_, bob) = app.create_user(&tenant, "bob@acme.test", &["member"]).await;
    let (_, viewer) = app.create_user(&tenant, "vic@acme.test", &["viewer"]).await;

    let created = app
        .post(
            "/v1/memories",
            &ada,
            json!({"content": "I prefer  answers in French", "kind": "preference", "importance": 7}),
        )
        .await;
    let created = created.expect(201);
    let id = created.str("id").to_owned();
    assert_eq!(created.body["shared"], false);
    assert_eq!(created.str("content"), "I prefer answers in French");
    // An exact duplicate (case and spacing aside) merges, keeping the stronger settings.
    let again = app
        .post(
            "/v1/memories",
            &ada,
            json!({"content": "i prefer answers in french", "importance": 9, "tier": "pinned"}),
        )
        .await;
    let again = again.expect(200);
    assert_eq!(again.str("id"), id);
    assert_eq!(again.body["importance"], 9);
    assert_eq!(again.str("tier"), "pinned");

    // Bob cannot see, change or delete Ada's memory: it does not exist for him.
    let path = format!("/v1/memories/{id}");
    app.get(&path, &bob).await.expect_problem(404, "not_found");
    app.patch(&path, &bob, json!({"importance": 1}))
        .await
        .expect_problem(404, "not_found");
    app.delete(&path, &bob)
        .await
        .expect_problem(404, "not_found");
    let listed = app.get("/v1/memories", &bob).await;
    assert!(!listed.expect(200).text.contains(&id));
    let found = app
        .post(
            "/v1/memories/search",
            &bob,
            json!({"query": "French answers"}),
        )
        .await;
    assert!(!found.expect(200).text.contains(&id));
    // Ada finds it by meaning and by words.
    let found = app
        .post(
            "/v1/memories/search",
            &ada,
            json!({"query": "which language for answers?"}),
        )
        .await;
    assert_eq!(found.expect(200).body[0]["memory"]["id"], id.as_str());

    // Shared memories need tenant:manage to write; everyone may read them.
    app.post(
        "/v1/memories",
        &ada,
        json!({"content": "The office closes at 18:00", "shared": true}),
    )
    .await
    .expect_problem(403, "permission_denied");
    let shared = app
        .post(
            "/v1/memories",
            &tenant.owner_token,
            json!({"content": "The office closes at 18:00", "shared": true}),
        )
        .await;
    let shared_id = shared.expect(201).str("id").to_owned();
    let shared_path = format!("/v1/memories/{shared_id}");
    app.get(&shared_path, &bob).await.expect(200);
    app.patch(&shared_path, &bob, json!({"importance": 1}))
        .await
        .expect_problem(403, "permission_denied");
    app.post(
        "/v1/memories",
        &viewer,
        json!({"content": "Viewers cannot write"}),
    )
    .await
    .expect_problem(403, "permission_denied");

    // Bad input: 4xx with the field named, nothing stored.
    for (body, field) in [
        (json!({"content": ""}), "content"),
        (json!({"content": "x", "importance": 11}), "importance"),
        (json!({"content": "x", "kind": "rumour"}), "kind"),
        (json!({"content": "x", "tier": "forever"}), "tier"),
    ] {
        let reply = app.post("/v1/memories", &ada, body).await;
        reply.expect_problem(422, "validation_failed");
        assert_eq!(reply.body["field"], field, "{}", reply.text);
    }
    app.get("/v1/memories/not-a-uuid", &ada)
        .await
        .expect_problem(400, "bad_request");

    // A user can delete everything Karen remembers about them.
    let forgotten = app.call("DELETE", "/v1/memories", Some(&ada), None).await;
    assert_eq!(forgotten.expect(200).body["deleted"], 1);
    app.get(&path, &ada).await.expect_problem(404, "not_found");
    let found = app
        .post("/v1/memories/search", &ada, json!({"query": "French"}))
        .await;
    assert!(!found.expect(200).text.contains(&id), "{}", found.text);
    app.get(&shared_path, &ada).await.expect(200);
    app.stop().await;
}

async fn documents_are_chunked_searched_and_guarded(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let (_, member) = app.create_user(&tenant, "ada@acme.test", &["member"]).await;
    let owner = tenant.owner_token.as_str();
    let markdown = "# Travel policy\n\nBook trains for trips under four hours.\n\n\
        ## Expenses\n\nReceipts are due within thirty days of the trip.";
    let doc = app
        .upload(
            owner,
            "?file_name=travel.md",
            "text/markdown",
            markdown.into(),
        )
        .await;
    let doc = doc.expect(201);
    let doc_id = doc.str("id").to_owned();
    assert_eq!(doc.str("title"), "Travel policy");
    assert_eq!(doc.str("format"), "markdown");
    let html = "<html><head><title>Payroll</title><script>var x='secret';</script></head>\
        <body><h1>Payroll</h1><p>Salaries are paid on the 25th.</p></body></html>";
    let restricted = app
        .upload(
            owner,
            "?roles=finance",
            "text/html; charset=utf-8",
            html.into(),
        )
        .await;
    let restricted_id = restricted.expect(201).str("id").to_owned();

    // Members read unrestricted documents and their passages, not restricted ones.
    let chunks = app
        .get(&format!("/v1/documents/{doc_id}/chunks"), &member)
        .await;
    let chunks = chunks.expect(200);
    assert!(chunks.text.contains("thirty days"), "{}", chunks.text);
    assert!(
        chunks.body[1]["heading"]
            .as_str()
            .unwrap()
            .contains("Expenses")
    );
    app.get(&format!("/v1/documents/{restricted_id}"), &member)
        .await
        .expect_problem(404, "not_found");
    let listed = app.get("/v1/documents", &member).await;
    assert_eq!(listed.expect(200).item_ids(), vec![doc_id.clone()]);
    let found = app
        .post(
            "/v1/search",
            &member,
            json!({"query": "when are receipts due?"}),
        )
        .await;
    let found = found.expect(200);
    assert_eq!(found.body["passages"][0]["document_id"], doc_id.as_str());
    assert!(
        found.body["passages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("thirty days")
    );
    let found = app
        .post("/v1/search", &member, json!({"query": "salaries paid"}))
        .await;
    assert!(
        !found.expect(200).text.contains(&restricted_id),
        "{}",
        found.text
    );
    let found = app
        .post("/v1/search", owner, json!({"query": "salaries paid"}))
        .await;
    assert!(
        !found.expect(200).text.contains("secret"),
        "script text is not indexed"
    );

    // Members may not upload or delete; unsupported and damaged files are refused.
    app.upload(&member, "", "text/plain", b"hello".to_vec())
        .await
        .expect_problem(403, "permission_denied");
    app.delete(&format!("/v1/documents/{doc_id}"), &member)
        .await
        .expect_problem(403, "permission_denied");
    for (query, media, body) in [
        ("", "image/png", b"\x89PNG....".to_vec()),
        (
            "?file_name=x.exe",
            "application/octet-stream",
            b"MZ".to_vec(),
        ),
        (
            "",
            "application/pdf",
            b"%PDF-1.7 this is not really a pdf".to_vec(),
        ),
        ("", "text/plain", vec![0xff, 0xfe, 0x00, 0x41]),
        ("", "text/plain", Vec::new()),
    ] {
        let reply = app.upload(owner, query, media, body).await;
        reply.expect_problem(422, "validation_failed");
        assert_eq!(reply.body["field"], "file", "{}", reply.text);
    }
    let listed = app.get("/v1/documents", owner).await;
    assert_eq!(
        listed.expect(200).item_ids().len(),
        2,
        "nothing half-stored"
    );

    // Deleting removes the passages from search.
    app.delete(&format!("/v1/documents/{doc_id}"), owner)
        .await
        .expect(204);
    let found = app
        .post(
            "/v1/search",
            &member,
            json!({"query": "receipts due trains"}),
        )
        .await;
    assert!(!found.expect(200).text.contains(&doc_id), "{}", found.text);
    app.get(&format!("/v1/documents/{doc_id}"), owner)
        .await
        .expect_problem(404, "not_found");
    app.stop().await;
}

on_both_backends!(
    memories_are_private_or_shared,
    documents_are_chunked_searched_and_guarded
);
