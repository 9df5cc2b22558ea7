//! Recall in chat turns on both backends: the offline provider answers from
//! exactly the passages and memories recalled, citations come back in the
//! answer, the stream's final event and the stored message; unrelated
//! material is left out; document roles and tenants bound what is recalled;
//! memories are written back (by rules offline, by the model when there is
//! one, never when the tenant turns it off); the OpenAI-compatible route
//! recalls only for credentials with `chat:recall`.

use std::time::Duration;

use karen_testkit::fake_llm::{Behaviour, FakeLlm};
use karen_testkit::{Backend, TestApp, spawn, spawn_with};
use serde_json::{Value, json};

use crate::assistant::sse_events;
use crate::assistant_upstream::through;

const HANDBOOK: &str = "# Employee handbook\n\n## Vacation\n\nEmployees get twenty-five vacation \
    days per year. Unused vacation days carry over until March.\n\n## Equipment\n\nLaptops are \
    replaced every three years by the IT desk.";

const PAYROLL: &str = "<html><body><h1>Payroll</h1><p>Salaries are paid on the 25th of each \
    month by bank transfer.</p></body></html>";

async fn conversation(app: &TestApp, token: &str) -> String {
    app.post("/v1/conversations", token, json!({}))
        .await
        .expect(201)
        .str("id")
        .to_owned()
}

async fn say(app: &TestApp, token: &str, chat: &str, content: &str) -> Value {
    let reply = app
        .post(
            &format!("/v1/conversations/{chat}/messages"),
            token,
            json!({ "content": content }),
        )
        .await;
    reply.expect(200);
    reply.body.clone()
}

fn cited_kinds(citations: &Value) -> Vec<String> {
    citations
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Memories of `token`'s user, polled until `wanted` of them contain `text`
/// (the write-back runs after the answer).
async fn wait_for_memory(app: &TestApp, token: &str, text: &str) -> Value {
    for _ in 0..100 {
        let listed = app.get("/v1/memories", token).await;
        let body = listed.expect(200).body.clone();
        if let Some(found) = body["items"].as_array().unwrap().iter().find(|m| {
            m["content"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase()
                .contains(&text.to_lowercase())
        }) {
            return found.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no memory containing {text:?} was written back");
}

async fn offline_turns_answer_from_recalled_passages_with_citations(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let owner = acme.owner_token.as_str();
    let (_, ada) = app.create_user(&acme, "ada@acme.test", &["member"]).await;
    app.post(
        "/v1/roles",
        owner,
        json!({"name": "finance", "permissions": ["documents:read"]}),
    )
    .await
    .expect(201);
    let (_, fin) = app
        .create_user(&acme, "fin@acme.test", &["member", "finance"])
        .await;
    let handbook = app
        .upload(
            owner,
            "?file_name=handbook.md",
            "text/markdown",
            HANDBOOK.into(),
        )
        .await;
    let handbook_id = handbook.expect(201).str("id").to_owned();
    let payroll = app
        .upload(owner, "?roles=finance", "text/html", PAYROLL.into())
        .await;
    let payroll_id = payroll.expect(201).str("id").to_owned();
    app.post(
        "/v1/memories",
        &ada,
        json!({"content": "Ada plans her vacation days around school holidays", "kind": "fact"}),
    )
    .await
    .expect(201);

    let chat = conversation(&app, &ada).await;
    let turn = say(&app, &ada, &chat, "How many vacation days do I get?").await;
    let answer = turn["message"]["content"].as_str().unwrap();
    assert!(answer.contains("twenty-five vacation days"), "{answer}");
    assert!(answer.contains("Employee handbook › Vacation"), "{answer}");
    assert!(answer.contains("school holidays"), "{answer}");
    assert!(answer.contains("not a language model"), "{answer}");
    let citations = &turn["message"]["citations"];
    assert_eq!(cited_kinds(citations)[0], "memory", "{citations}");
    let passage = citations
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "passage")
        .expect("the handbook is cited");
    assert_eq!(passage["document_id"], handbook_id.as_str());
    assert_eq!(passage["document_title"], "Employee handbook");
    assert_eq!(passage["heading"], "Employee handbook > Vacation");
    assert!(passage["score"].as_f64().unwrap() > 0.0);
    // The markers the answer shows are the citations' markers.
    for citation in citations.as_array().unwrap() {
        assert!(
            answer.contains(&format!("[{}]", citation["marker"])),
            "{answer}"
        );
    }
    // Nobody without the finance role is given the payroll document.
    assert!(!turn.to_string().contains(&payroll_id));

    // The stored answer keeps its citations.
    let stored = app
        .get(&format!("/v1/conversations/{chat}/messages"), &ada)
        .await;
    let stored = stored.expect(200).body["items"][1].clone();
    assert_eq!(stored["citations"], *citations);

    // Unrelated material is not offered: the answer says there is nothing.
    let turn = say(&app, &ada, &chat, "Where is the coffee machine?").await;
    assert_eq!(turn["message"]["citations"], json!([]));
    assert!(
        turn["message"]["content"]
            .as_str()
            .unwrap()
            .contains("no stored memories or documents relevant"),
        "{turn}"
    );

    // With the role, the restricted document is recalled; streamed, the
    // citations come in the final event.
    let chat = conversation(&app, &fin).await;
    let reply = app
        .post(
            &format!("/v1/conversations/{chat}/messages"),
            &fin,
            json!({"content": "When are salaries paid?", "stream": true}),
        )
        .await;
    reply.expect(200);
    let events = sse_events(&reply.text);
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "delta")
        .map(|(_, data)| data["content"].as_str().unwrap())
        .collect();
    assert!(text.contains("paid on the 25th"), "{text}");
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done");
    assert_eq!(done["citations"][0]["document_id"], payroll_id.as_str());
    app.stop().await;
}

async fn recall_never_crosses_tenants(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    app.upload(
        &acme.owner_token,
        "?file_name=handbook.md",
        "text/markdown",
        HANDBOOK.into(),
    )
    .await
    .expect(201);
    app.post(
        "/v1/memories",
        &acme.owner_token,
        json!({"content": "Vacation days are precious", "shared": true}),
    )
    .await
    .expect(201);
    // Same words in the other tenant: nothing of acme's is recalled.
    let chat = conversation(&app, &globex.owner_token).await;
    let turn = say(
        &app,
        &globex.owner_token,
        &chat,
        "How many vacation days per year? \"twenty-five\" OR tenant_id:*",
    )
    .await;
    assert_eq!(turn["message"]["citations"], json!([]), "{turn}");
    assert!(!turn.to_string().contains("twenty-five vacation days"));
    // The owner of acme does get them (shared memory and passage).
    let chat = conversation(&app, &acme.owner_token).await;
    let turn = say(
        &app,
        &acme.owner_token,
        &chat,
        "How many vacation days per year?",
    )
    .await;
    let kinds = cited_kinds(&turn["message"]["citations"]);
    assert!(kinds.contains(&"memory".to_owned()) && kinds.contains(&"passage".to_owned()));
    app.stop().await;
}

async fn turns_write_memories_back_unless_the_tenant_says_no(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, ada) = app.create_user(&acme, "ada@acme.test", &["member"]).await;
    let chat = conversation(&app, &ada).await;
    let turn = say(&app, &ada, &chat, "My name is Ada Lovelace. What is new?").await;
    let message_id = turn["user_message"]["id"].clone();
    let memory = wait_for_memory(&app, &ada, "Ada Lovelace").await;
    assert_eq!(memory["source_conversation_id"], chat.as_str());
    assert_eq!(memory["source_message_id"], message_id);
    // A later turn recalls it.
    let turn = say(&app, &ada, &chat, "Do you know my name, Lovelace?").await;
    assert_eq!(cited_kinds(&turn["message"]["citations"]), ["memory"]);

    // The tenant turns extraction off: nothing more is remembered.
    let tenant = app.get("/v1/tenant", &acme.owner_token).await;
    let mut settings = tenant.expect(200).body["settings"].clone();
    assert_eq!(settings["memory_extraction"], true);
    settings["memory_extraction"] = json!(false);
    app.patch(
        "/v1/tenant",
        &acme.owner_token,
        json!({ "settings": settings }),
    )
    .await
    .expect(200);
    say(&app, &ada, &chat, "I prefer tea over coffee.").await;
    // A memory created afterwards through the API is visible at once; by
    // then the turn's write-back (had there been one) has long run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = app.get("/v1/memories", &ada).await;
    assert!(!listed.expect(200).text.contains("tea"), "{}", listed.text);
    app.stop().await;
}

async fn a_model_extracts_memories_and_the_call_is_metered(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| {
        through(&fake, c);
        c.memory.extraction = "auto".into();
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let owner = acme.owner_token.as_str();
    let chat = conversation(&app, owner).await;
    fake.push(Behaviour::Echo);
    fake.push(Behaviour::Reply(
        "Here you go:\n[{\"kind\": \"preference\", \"content\": \"The user drinks green tea every \
         morning.\", \"importance\": 7, \"tier\": \"long\"}]"
            .into(),
    ));
    say(
        &app,
        owner,
        &chat,
        "Green tea every morning keeps me going.",
    )
    .await;
    let memory = wait_for_memory(&app, owner, "green tea every morning").await;
    assert_eq!(memory["kind"], "preference");
    assert_eq!(memory["importance"], 7);
    // The extraction call went to the model with its instruction, and was metered.
    let sent = fake.last_request().unwrap();
    assert!(
        sent["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("worth remembering"),
        "{sent}"
    );
    let usage = app.get("/v1/usage", owner).await;
    let items = usage.expect(200).body["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 2, "{items}");
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["conversation_id"] == chat.as_str())
    );

    // A model that fails the extraction leaves it to the rules.
    fake.push(Behaviour::Echo);
    fake.push(Behaviour::Status(500));
    say(&app, owner, &chat, "Remember that my desk is in room 4.").await;
    wait_for_memory(&app, owner, "my desk is in room 4").await;
    app.stop().await;
}

async fn the_gateway_recalls_only_for_keys_with_chat_recall(backend: Backend) {
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let owner = acme.owner_token.as_str();
    app.upload(
        owner,
        "?file_name=handbook.md",
        "text/markdown",
        HANDBOOK.into(),
    )
    .await
    .expect(201);
    let (_, plain) = app.create_api_key(owner, json!({"name": "plain"})).await;
    let (_, recalling) = app
        .create_api_key(
            owner,
            json!({"name": "recall", "scopes": ["chat:write", "chat:recall", "documents:read"]}),
        )
        .await;
    let body = json!({
        "model": "fake-echo",
        "messages": [{"role": "user", "content": "How many vacation days per year?"}],
    });

    let reply = app.post("/v1/chat/completions", &plain, body.clone()).await;
    assert!(reply.expect(200).body.get("citations").is_none());
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"].as_array().unwrap().len(),
        1,
        "nothing added: {sent}"
    );

    let reply = app
        .post("/v1/chat/completions", &recalling, body.clone())
        .await;
    let completion = reply.expect(200).body.clone();
    assert_eq!(
        completion["citations"][0]["kind"], "passage",
        "{completion}"
    );
    assert_eq!(
        completion["citations"][0]["document_title"],
        "Employee handbook"
    );
    let sent = fake.last_request().unwrap();
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert!(
        system.contains("[1] Employee handbook › Vacation: "),
        "{system}"
    );
    assert!(
        system.contains("Employees get twenty-five vacation days"),
        "{system}"
    );

    // Streamed: the citations come in a chunk of their own before [DONE].
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let reply = app.post("/v1/chat/completions", &recalling, streamed).await;
    let text = reply.expect(200).text.clone();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["citations"][0]["kind"], "passage", "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));

    // A key cannot be given chat:recall by default, and keys created
    // without scopes lack it.
    let keys = app.get("/v1/api-keys", owner).await;
    let keys = keys.expect(200).body["items"].clone();
    let plain_scopes = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "plain")
        .unwrap()["scopes"]
        .clone();
    assert!(
        !plain_scopes.to_string().contains("chat:recall"),
        "{plain_scopes}"
    );
    app.stop().await;
}

on_both_backends!(
    offline_turns_answer_from_recalled_passages_with_citations,
    recall_never_crosses_tenants,
    turns_write_memories_back_unless_the_tenant_says_no,
    a_model_extracts_memories_and_the_call_is_metered,
    the_gateway_recalls_only_for_keys_with_chat_recall
);
