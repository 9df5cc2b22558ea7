//! Tenancy rule 7: every tenant endpoint, exercised by tenant A (with an access
//! token and with an API key) against tenant B's objects, on both backends.
//! Foreign ids answer 404 exactly like missing ids, lists never show B's rows,
//! and B's data is unchanged afterwards. The test also checks that it covered
//! every bearer-secured operation of the OpenAPI document.

use std::collections::BTreeSet;

use karen_testkit::oidc_provider::{OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, TestOidcProvider};
use karen_testkit::{Backend, PASSWORD, Reply, TestApp, spawn, spawn_with};

mod scim;
use serde_json::{Value, json};
use uuid::Uuid;

struct Tracker<'a> {
    app: &'a TestApp,
    covered: BTreeSet<(String, String)>,
}

impl Tracker<'_> {
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        self.covered
            .insert((method.to_lowercase(), template.to_owned()));
        self.app.call(method, path, Some(token), body).await
    }

    /// Calls `template` with B's id and with a missing id; both must be the same 404.
    async fn foreign_is_missing(
        &mut self,
        method: &str,
        template: &str,
        placeholder: &str,
        foreign: &str,
        token: &str,
        body: Option<Value>,
    ) {
        let missing = Uuid::now_v7().to_string();
        // Ids are UUIDs; names (roles, aliases) are missing when no such name exists.
        let missing_name = "no-such-name".to_owned();
        let absent = if Uuid::try_parse(foreign).is_err() {
            missing_name
        } else {
            missing
        };
        let foreign_reply = self
            .call(
                method,
                template,
                &template.replace(placeholder, foreign),
                token,
                body.clone(),
            )
            .await;
        let missing_reply = self
            .call(
                method,
                template,
                &template.replace(placeholder, &absent),
                token,
                body,
            )
            .await;
        foreign_reply.expect_problem(404, "not_found");
        missing_reply.expect_problem(404, "not_found");
        assert_eq!(
            foreign_reply.body["detail"], missing_reply.body["detail"],
            "{method} {template}: foreign and missing differ"
        );
    }
}

async fn tenants_cannot_reach_each_other(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        c.sso.allow_private_addresses = vec!["127.0.0.1".into()];
    })
    .await
    else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let bravo = app.create_tenant("bravo").await;
    // B signs in through its identity provider.
    let idp = TestOidcProvider::start(app.clock.clone()).await;
    let sso = |client_id: &str| {
        json!({"issuer": idp.issuer, "client_id": client_id, "client_secret": OIDC_CLIENT_SECRET,
            "role_mapping": {"claim": "groups", "default_role": "member"}})
    };
    app.put(
        "/v1/tenant/sso/oidc",
        &bravo.owner_token,
        sso(OIDC_CLIENT_ID),
    )
    .await
    .expect(200);
    // …and through its SAML identity provider.
    let b_saml = app
        .put(
            crate::sso_saml::SAML_CONNECTION,
            &bravo.owner_token,
            crate::sso_saml::saml_connection_body(),
        )
        .await;
    let b_saml = b_saml.expect(200).str("id").to_owned();

    // Tenant B's objects.
    let (b_user, b_user_token) = app
        .create_user(&bravo, "member@bravo.test", &["member"])
        .await;
    let (b_key, b_key_secret) = app
        .create_api_key(&bravo.owner_token, json!({"name": "bravo key"}))
        .await;
    // B's member has started enrolling an authenticator.
    app.post("/v1/auth/mfa/totp", &b_user_token, json!({}))
        .await
        .expect(200);
    app.post(
        "/v1/roles",
        &bravo.owner_token,
        json!({"name": "bravo-role", "permissions": ["chat:read"]}),
    )
    .await
    .expect(201);
    // B's assistant data: a conversation with a turn (and its usage), a shared persona.
    let b_chat = app
        .post(
            "/v1/conversations",
            &bravo.owner_token,
            json!({"title": "bravo chat"}),
        )
        .await;
    let b_chat = b_chat.expect(201).str("id").to_owned();
    app.post(
        &format!("/v1/conversations/{b_chat}/messages"),
        &bravo.owner_token,
        json!({"content": "bravo secret"}),
    )
    .await
    .expect(200);
    let b_persona = app
        .post(
            "/v1/personas",
            &bravo.owner_token,
            json!({"name": "Bravo", "system_prompt": "bravo", "shared": true}),
        )
        .await;
    let b_persona = b_persona.expect(201).str("id").to_owned();
    let b_budget = app
        .post(
            "/v1/budgets",
            &bravo.owner_token,
            json!({"scope": "user", "subject_id": b_user, "metric": "tokens",
            "period": "day", "limit": 1000000, "enforcement": "soft"}),
        )
        .await;
    let b_budget = b_budget.expect(201).str("id").to_owned();
    let b_provider = app
        .post(
            "/v1/providers",
            &bravo.owner_token,
            json!({"name": "bravo-llm", "base_url": "https://llm.bravo.example/v1",
            "api_key": "sk-bravo-secret", "models": ["bravo-model"]}),
        )
        .await;
    let b_provider = b_provider.expect(201).str("id").to_owned();
    app.put(
        "/v1/model-aliases/bravo-alias",
        &bravo.owner_token,
        json!({"target": "karen-offline-extractive"}),
    )
    .await
    .expect(200);
    // B's memory and documents: a shared memory, a private one of B's
    // member, a document; all with a word A will search for.
    let b_memory = app
        .post(
            "/v1/memories",
            &bravo.owner_token,
            json!({"content": "Bravo zanzibar launch codes are kept offline", "shared": true}),
        )
        .await;
    let b_memory = b_memory.expect(201).str("id").to_owned();
    app.post(
        "/v1/memories",
        &b_user_token,
        json!({"content": "My zanzibar locker is number 12"}),
    )
    .await
    .expect(201);
    let b_document = app
        .upload(
            &bravo.owner_token,
            "?file_name=bravo.md",
            "text/markdown",
            b"# Zanzibar plan\n\nThe zanzibar project starts in May.".to_vec(),
        )
        .await;
    let b_document = b_document.expect(201).str("id").to_owned();
    // B names its embedding model explicitly (the default: nothing to re-embed).
    let b_tenant = app.get("/v1/tenant", &bravo.owner_token).await;
    let mut b_settings = b_tenant.expect(200).body["settings"].clone();
    b_settings["embedding_model"] = json!("karen-offline-hash-384");
    app.patch(
        "/v1/tenant",
        &bravo.owner_token,
        json!({"settings": b_settings}),
    )
    .await
    .expect(200);
    // Tenant A's own objects, and an API key of A's owner (a second kind of credential).
    let (a_user, _) = app
        .create_user(&alpha, "member@alpha.test", &["member"])
        .await;
    let (_, a_key_secret) = app
        .create_api_key(&alpha.owner_token, json!({"name": "alpha key"}))
        .await;

    // B's member's session (A may neither list nor end it; its token is
    // still good at the end).
    let b_me = app.get("/v1/me", &b_user_token).await;
    let b_session = b_me.expect(200).str("session_id").to_owned();

    let scim_seed = scim::seed(&app, &alpha, &bravo).await;
    let mut t = Tracker {
        app: &app,
        covered: BTreeSet::new(),
    };
    for token in [alpha.owner_token.as_str(), a_key_secret.as_str()] {
        let b_user = b_user.to_string();
        let b_key = b_key.to_string();
        for (method, template, body) in [
            ("GET", "/v1/conversations/{conversation_id}", None),
            (
                "PATCH",
                "/v1/conversations/{conversation_id}",
                Some(json!({"title": "mine"})),
            ),
            ("DELETE", "/v1/conversations/{conversation_id}", None),
            ("GET", "/v1/conversations/{conversation_id}/messages", None),
            (
                "POST",
                "/v1/conversations/{conversation_id}/messages",
                Some(json!({"content": "hi"})),
            ),
        ] {
            t.foreign_is_missing(method, template, "{conversation_id}", &b_chat, token, body)
                .await;
        }
        for (method, template, body) in [
            ("GET", "/v1/personas/{persona_id}", None),
            (
                "PATCH",
                "/v1/personas/{persona_id}",
                Some(json!({"name": "mine"})),
            ),
            ("DELETE", "/v1/personas/{persona_id}", None),
        ] {
            t.foreign_is_missing(method, template, "{persona_id}", &b_persona, token, body)
                .await;
        }
        for (method, template, body) in [
            ("GET", "/v1/memories/{memory_id}", None),
            (
                "PATCH",
                "/v1/memories/{memory_id}",
                Some(json!({"content": "mine"})),
            ),
            ("DELETE", "/v1/memories/{memory_id}", None),
        ] {
            t.foreign_is_missing(method, template, "{memory_id}", &b_memory, token, body)
                .await;
        }
        for (method, template) in [
            ("GET", "/v1/documents/{document_id}"),
            ("DELETE", "/v1/documents/{document_id}"),
            ("GET", "/v1/documents/{document_id}/chunks"),
        ] {
            t.foreign_is_missing(method, template, "{document_id}", &b_document, token, None)
                .await;
        }
        for (template, query) in [
            ("/v1/memories", "/v1/memories"),
            ("/v1/memories", "/v1/memories?scope=shared"),
            ("/v1/documents", "/v1/documents"),
        ] {
            let listed = t.call("GET", template, query, token, None).await;
            assert!(
                !listed.expect(200).text.contains("zanzibar") && !listed.text.contains(&b_document),
                "B's memories or documents listed for A: {}",
                listed.text
            );
        }
        let search = json!({"query": "zanzibar launch codes project locker", "limit": 50});
        for template in ["/v1/memories/search", "/v1/search"] {
            let found = t
                .call("POST", template, template, token, Some(search.clone()))
                .await;
            assert!(
                !found.expect(200).text.contains("zanzibar"),
                "{template} returned B's data to A: {}",
                found.text
            );
        }
        // Forgetting "everything about me" in A touches nothing of B.
        t.call("DELETE", "/v1/memories", "/v1/memories", token, None)
            .await
            .expect(200);
        let chats = t
            .call("GET", "/v1/conversations", "/v1/conversations", token, None)
            .await;
        assert!(
            !chats.expect(200).item_ids().contains(&b_chat),
            "B's conversation listed for A"
        );
        let personas = t
            .call("GET", "/v1/personas", "/v1/personas", token, None)
            .await;
        assert!(
            !personas.expect(200).text.contains(&b_persona),
            "B's persona listed for A"
        );
        // Stateless completions run in A's tenant and are metered there.
        let body = json!({"model": "karen-offline-extractive", "messages": [{"role": "user", "content": "hi"}]});
        t.call(
            "POST",
            "/v1/chat/completions",
            "/v1/chat/completions",
            token,
            Some(body),
        )
        .await
        .expect(200);
        t.call("GET", "/v1/models", "/v1/models", token, None)
            .await
            .expect(200);
        t.foreign_is_missing(
            "DELETE",
            "/v1/budgets/{budget_id}",
            "{budget_id}",
            &b_budget,
            token,
            None,
        )
        .await;
        let budgets = t
            .call("GET", "/v1/budgets", "/v1/budgets", token, None)
            .await;
        assert!(
            !budgets.expect(200).text.contains(&b_budget),
            "B's budget listed for A"
        );
        // A budget cannot name another tenant's user: it does not exist here.
        let foreign_subject = json!({"scope": "user", "subject_id": b_user, "metric": "tokens", "period": "day",
            "limit": 5, "enforcement": "hard"});
        t.call(
            "POST",
            "/v1/budgets",
            "/v1/budgets",
            token,
            Some(foreign_subject),
        )
        .await
        .expect_problem(422, "validation_failed");
        for (method, template, body) in [
            (
                "PATCH",
                "/v1/providers/{provider_id}",
                Some(json!({"base_url": "https://evil.example/v1"})),
            ),
            ("DELETE", "/v1/providers/{provider_id}", None),
        ] {
            t.foreign_is_missing(method, template, "{provider_id}", &b_provider, token, body)
                .await;
        }
        t.foreign_is_missing(
            "DELETE",
            "/v1/model-aliases/{alias}",
            "{alias}",
            "bravo-alias",
            token,
            None,
        )
        .await;
        let providers = t
            .call("GET", "/v1/providers", "/v1/providers", token, None)
            .await;
        assert!(
            !providers.expect(200).text.contains(&b_provider),
            "B's provider listed for A"
        );
        let aliases = t
            .call("GET", "/v1/model-aliases", "/v1/model-aliases", token, None)
            .await;
        assert!(
            !aliases.expect(200).text.contains("bravo-alias"),
            "B's alias listed for A"
        );
        let foreign_model =
            json!({"model": "bravo-model", "messages": [{"role": "user", "content": "hi"}]});
        let refused = t
            .call(
                "POST",
                "/v1/chat/completions",
                "/v1/chat/completions",
                token,
                Some(foreign_model),
            )
            .await;
        // Exactly what a model that exists nowhere gets.
        assert_eq!(
            refused.status, 404,
            "A may not use B's provider: {}",
            refused.text
        );
        // Embeddings run in A's tenant; B's provider's models do not exist for A.
        t.call(
            "POST",
            "/v1/embeddings",
            "/v1/embeddings",
            token,
            Some(json!({"model": "karen-offline-hash-384", "input": "zanzibar"})),
        )
        .await
        .expect(200);
        let foreign_embedding = t
            .call(
                "POST",
                "/v1/embeddings",
                "/v1/embeddings",
                token,
                Some(json!({"model": "bravo-model", "input": "hi"})),
            )
            .await;
        assert_eq!(foreign_embedding.status, 404, "{}", foreign_embedding.text);
        assert_eq!(foreign_embedding.body["error"]["code"], "model_not_found");
        let models = t.call("GET", "/v1/models", "/v1/models", token, None).await;
        assert!(
            !models.expect(200).text.contains("bravo-model"),
            "B's model listed for A"
        );
        let usage = t.call("GET", "/v1/usage", "/v1/usage", token, None).await;
        assert!(
            !usage.expect(200).text.contains(&b_chat),
            "B's usage listed for A"
        );
        let insights = t
            .call(
                "GET",
                "/v1/tenant/insights",
                "/v1/tenant/insights",
                token,
                None,
            )
            .await;
        let insights = insights.expect(200);
        assert!(
            insights.body["process"].is_null(),
            "process-wide numbers shown to a tenant"
        );
        for foreign in [bravo.slug.as_str(), &bravo.id.to_string()] {
            assert!(
                !insights.text.contains(foreign),
                "B's usage in A's insights"
            );
        }
        for (method, template, body) in [
            ("GET", "/v1/users/{user_id}", None),
            (
                "PATCH",
                "/v1/users/{user_id}",
                Some(json!({"display_name": "Mallory"})),
            ),
            (
                "PUT",
                "/v1/users/{user_id}/roles",
                Some(json!({"roles": ["viewer"]})),
            ),
            ("POST", "/v1/users/{user_id}/disable", None),
            ("POST", "/v1/users/{user_id}/enable", None),
            ("POST", "/v1/users/{user_id}/unlock", None),
            ("DELETE", "/v1/users/{user_id}/mfa", None),
            ("POST", "/v1/users/{user_id}/password-reset", None),
        ] {
            t.foreign_is_missing(method, template, "{user_id}", &b_user, token, body)
                .await;
        }
        for (method, template) in [
            ("GET", "/v1/api-keys/{key_id}"),
            ("DELETE", "/v1/api-keys/{key_id}"),
        ] {
            t.foreign_is_missing(method, template, "{key_id}", &b_key, token, None)
                .await;
        }
        t.foreign_is_missing(
            "DELETE",
            "/v1/auth/sessions/{session_id}",
            "{session_id}",
            &b_session,
            token,
            None,
        )
        .await;
        let sessions = t
            .call("GET", "/v1/auth/sessions", "/v1/auth/sessions", token, None)
            .await;
        assert!(
            !sessions.expect(200).text.contains(&b_session),
            "B's session listed for A"
        );
        for (method, template, body) in [
            ("GET", "/v1/roles/{name}", None),
            (
                "PATCH",
                "/v1/roles/{name}",
                Some(json!({"permissions": ["chat:read", "chat:write"]})),
            ),
            ("DELETE", "/v1/roles/{name}", None),
        ] {
            t.foreign_is_missing(method, template, "{name}", "bravo-role", token, body)
                .await;
        }

        // Lists show A's rows only.
        let users = t
            .call("GET", "/v1/users", "/v1/users?limit=200", token, None)
            .await;
        users.expect(200);
        let ids = users.item_ids();
        assert!(ids.contains(&a_user.to_string()) && ids.contains(&alpha.owner_id.to_string()));
        assert!(
            !ids.contains(&b_user) && !ids.contains(&bravo.owner_id.to_string()),
            "B's users listed for A"
        );
        let keys = t
            .call("GET", "/v1/api-keys", "/v1/api-keys?all=true", token, None)
            .await;
        keys.expect(200);
        assert!(!keys.item_ids().contains(&b_key), "B's key listed for A");
        let roles = t.call("GET", "/v1/roles", "/v1/roles", token, None).await;
        roles.expect(200);
        assert!(!roles.text.contains("bravo-role"), "B's role listed for A");
        let tenant = t.call("GET", "/v1/tenant", "/v1/tenant", token, None).await;
        tenant.expect(200);
        assert_eq!(tenant.str("slug"), "alpha");
        let index = t
            .call("GET", "/v1/tenant/index", "/v1/tenant/index", token, None)
            .await;
        let index = index.expect(200);
        assert!(
            index.body["requested_model"].is_null(),
            "B's setting shown to A: {}",
            index.text
        );
        assert!(index.body["job"].is_null());
        let me = t.call("GET", "/v1/me", "/v1/me", token, None).await;
        assert_eq!(me.expect(200).str("tenant_slug"), "alpha");
        // A has no SSO connection; B's is not A's.
        t.call(
            "GET",
            "/v1/tenant/sso/oidc",
            "/v1/tenant/sso/oidc",
            token,
            None,
        )
        .await
        .expect_problem(404, "not_found");
        t.call(
            "GET",
            "/v1/tenant/sso/saml",
            "/v1/tenant/sso/saml",
            token,
            None,
        )
        .await
        .expect_problem(404, "not_found");
        t.call("GET", "/v1/permissions", "/v1/permissions", token, None)
            .await
            .expect(200);
    }

    // Writes without ids land in A: B's email is free to use in A, names do not collide.
    t.call("POST", "/v1/providers", "/v1/providers", &alpha.owner_token,
        Some(json!({"name": "bravo-llm", "base_url": "https://llm.alpha.example/v1", "models": ["alpha-model"]})))
        .await
        .expect(201);
    t.call(
        "PUT",
        "/v1/model-aliases/{alias}",
        "/v1/model-aliases/bravo-alias",
        &alpha.owner_token,
        Some(json!({"target": "alpha-model"})),
    )
    .await
    .expect(200);
    let a_chat = t
        .call(
            "POST",
            "/v1/conversations",
            "/v1/conversations",
            &alpha.owner_token,
            Some(json!({})),
        )
        .await;
    assert_eq!(a_chat.expect(201).body["title"], serde_json::Value::Null);
    t.call(
        "POST",
        "/v1/personas",
        "/v1/personas",
        &alpha.owner_token,
        Some(json!({"name": "Bravo"})),
    )
    .await
    .expect(201);
    let owner = alpha.owner_token.as_str();
    // A's own memory and document land in A, even with B's words.
    t.call(
        "POST",
        "/v1/memories",
        "/v1/memories",
        owner,
        Some(json!({"content": "Bravo zanzibar launch codes are kept offline", "shared": true})),
    )
    .await
    .expect(201);
    app.upload(
        owner,
        "?file_name=a.txt",
        "text/plain",
        b"alpha zanzibar".to_vec(),
    )
    .await
    .expect(201);
    t.covered.insert(("post".into(), "/v1/documents".into()));
    t.call(
        "POST",
        "/v1/users",
        "/v1/users",
        owner,
        Some(json!({"email": "member@bravo.test", "password": PASSWORD})),
    )
    .await
    .expect(201);
    t.call(
        "POST",
        "/v1/roles",
        "/v1/roles",
        owner,
        Some(json!({"name": "bravo-role", "permissions": []})),
    )
    .await
    .expect(201);
    t.call(
        "POST",
        "/v1/api-keys",
        "/v1/api-keys",
        owner,
        Some(json!({"name": "bravo key"})),
    )
    .await
    .expect(201);
    t.call(
        "PATCH",
        "/v1/tenant",
        "/v1/tenant",
        owner,
        Some(json!({"name": "Alpha renamed"})),
    )
    .await
    .expect(200);
    // SSO: A's connection is A's own; removing it leaves B's alone.
    let sso_path = "/v1/tenant/sso/oidc";
    t.call("PUT", sso_path, sso_path, owner, Some(sso("alpha-client")))
        .await
        .expect(200);
    let a_sso = t.call("GET", sso_path, sso_path, owner, None).await;
    assert_eq!(a_sso.expect(200).str("client_id"), "alpha-client");
    t.call("DELETE", sso_path, sso_path, owner, None)
        .await
        .expect(204);
    t.call("DELETE", sso_path, sso_path, owner, None)
        .await
        .expect_problem(404, "not_found");
    let saml_path = "/v1/tenant/sso/saml";
    let saml_body = crate::sso_saml::saml_connection_body();
    let a_saml = t
        .call("PUT", saml_path, saml_path, owner, Some(saml_body))
        .await;
    assert_ne!(a_saml.expect(200).str("id"), b_saml, "A's own connection");
    t.call("GET", saml_path, saml_path, owner, None)
        .await
        .expect(200);
    t.call("DELETE", saml_path, saml_path, owner, None)
        .await
        .expect(204);
    t.call("DELETE", saml_path, saml_path, owner, None)
        .await
        .expect_problem(404, "not_found");
    // MFA: A enrolling and removing its own authenticator leaves B's alone.
    let status = t
        .call("GET", "/v1/auth/mfa", "/v1/auth/mfa", owner, None)
        .await;
    assert_eq!(status.expect(200).str("totp"), "none");
    t.call(
        "POST",
        "/v1/auth/mfa/totp",
        "/v1/auth/mfa/totp",
        owner,
        None,
    )
    .await
    .expect(200);
    t.call(
        "POST",
        "/v1/auth/mfa/totp/confirm",
        "/v1/auth/mfa/totp/confirm",
        owner,
        Some(json!({"code": "abcdef"})),
    )
    .await
    .expect_problem(422, "validation_failed");
    t.call(
        "DELETE",
        "/v1/auth/mfa/totp",
        "/v1/auth/mfa/totp",
        owner,
        Some(json!({"password": PASSWORD})),
    )
    .await
    .expect(204);
    scim::sweep(&mut t, &app, &alpha, &bravo, &scim_seed).await;

    // Sessions: A logging out (everywhere) and changing passwords leaves B alone.
    let second = app.token("alpha", &alpha.owner_email, PASSWORD).await;
    t.call(
        "POST",
        "/v1/me/password",
        "/v1/me/password",
        &second,
        Some(json!({"current_password": PASSWORD, "new_password": "another long passphrase"})),
    )
    .await
    .expect(204);
    t.call("POST", "/v1/auth/logout", "/v1/auth/logout", &second, None)
        .await
        .expect(204);
    let third = app
        .token("alpha", &alpha.owner_email, "another long passphrase")
        .await;
    t.call(
        "POST",
        "/v1/auth/logout-all",
        "/v1/auth/logout-all",
        &third,
        None,
    )
    .await
    .expect(200);

    // Audit: A's trail, exports and checkpoints never show B's events.
    // (A logged out everywhere above: sign in again.)
    let fresh = app
        .token("alpha", &alpha.owner_email, "another long passphrase")
        .await;
    let a_owner = fresh.as_str();

    // Rate limits: an override the operator gives B is B's alone.
    app.put(
        &format!("/v1/platform/tenants/{}/rate-limits", bravo.id),
        &app.operator_key,
        json!({"user": {"requests": 12345, "window_secs": 60}}),
    )
    .await
    .expect(200);
    let limits = t
        .call(
            "GET",
            "/v1/tenant/rate-limits",
            "/v1/tenant/rate-limits",
            a_owner,
            None,
        )
        .await;
    assert_ne!(
        limits.expect(200).body["user"]["requests"],
        json!(12345),
        "A sees B's override"
    );
    // Retention and legal holds: B's policy and holds are B's alone; A cannot
    // hold B's user or conversation, nor lift B's hold.
    app.put(
        "/v1/tenant/retention",
        &bravo.owner_token,
        json!({"conversations_days": 7}),
    )
    .await
    .expect(200);
    let b_hold = app
        .post(
            "/v1/legal-holds",
            &bravo.owner_token,
            json!({"scope": "conversation", "target_id": b_chat, "reason": "bravo matter"}),
        )
        .await;
    let b_hold = b_hold.expect(201).str("id").to_owned();
    let a_retention = t
        .call(
            "GET",
            "/v1/tenant/retention",
            "/v1/tenant/retention",
            a_owner,
            None,
        )
        .await;
    assert!(a_retention.expect(200).body["policy"]["conversations_days"].is_null());
    t.call(
        "PUT",
        "/v1/tenant/retention",
        "/v1/tenant/retention",
        a_owner,
        Some(json!({"usage_days": 3650})),
    )
    .await
    .expect(200);
    t.call(
        "POST",
        "/v1/tenant/retention/run",
        "/v1/tenant/retention/run",
        a_owner,
        None,
    )
    .await
    .expect(200);
    for (scope, target) in [
        ("user", b_user.to_string()),
        ("conversation", b_chat.clone()),
    ] {
        t.call(
            "POST",
            "/v1/legal-holds",
            "/v1/legal-holds",
            a_owner,
            Some(json!({"scope": scope, "target_id": target, "reason": "fishing"})),
        )
        .await
        .expect_problem(404, "not_found");
    }
    let a_holds = t
        .call("GET", "/v1/legal-holds", "/v1/legal-holds", a_owner, None)
        .await;
    assert!(!a_holds.expect(200).text.contains(&b_hold));
    t.foreign_is_missing(
        "DELETE",
        "/v1/legal-holds/{hold_id}",
        "{hold_id}",
        &b_hold,
        a_owner,
        None,
    )
    .await;
    let b_retention = app.get("/v1/tenant/retention", &bravo.owner_token).await;
    assert_eq!(
        b_retention.expect(200).body["policy"]["conversations_days"],
        json!(7)
    );
    assert!(b_retention.body["policy"]["usage_days"].is_null());
    let b_holds = app.get("/v1/legal-holds", &bravo.owner_token).await;
    assert!(
        b_holds.expect(200).text.contains(&b_hold),
        "B's hold survived A"
    );

    let trail = t
        .call("GET", "/v1/audit", "/v1/audit?limit=200", a_owner, None)
        .await;
    let export = t
        .call(
            "GET",
            "/v1/audit/export",
            "/v1/audit/export?format=csv",
            a_owner,
            None,
        )
        .await;
    t.call(
        "POST",
        "/v1/audit/checkpoints",
        "/v1/audit/checkpoints",
        a_owner,
        None,
    )
    .await
    .expect(200);
    let checkpoints = t
        .call(
            "GET",
            "/v1/audit/checkpoints",
            "/v1/audit/checkpoints",
            a_owner,
            None,
        )
        .await;
    t.call(
        "GET",
        "/v1/audit/checkpoints/key",
        "/v1/audit/checkpoints/key",
        a_owner,
        None,
    )
    .await
    .expect(200);
    let report = t
        .call(
            "GET",
            "/v1/tenant/compliance-report",
            "/v1/tenant/compliance-report?framework=soc2",
            a_owner,
            None,
        )
        .await;
    assert!(
        !report.text.contains(&bravo.owner_email),
        "B's administrator in A's compliance report"
    );
    // A's owner cannot export B's user; A's own export holds nothing of B.
    t.call(
        "GET",
        "/v1/users/{user_id}/export",
        &format!("/v1/users/{b_user}/export"),
        a_owner,
        None,
    )
    .await
    .expect(404);
    // Nor erase B's user (B's user is still there at the end: "B is untouched").
    t.call(
        "POST",
        "/v1/users/{user_id}/erase",
        &format!("/v1/users/{b_user}/erase"),
        a_owner,
        Some(json!({"confirm_email": "member@bravo.test"})),
    )
    .await
    .expect(404);
    let own_export = t
        .call(
            "GET",
            "/v1/users/{user_id}/export",
            &format!("/v1/users/{}/export", alpha.owner_id),
            a_owner,
            None,
        )
        .await;
    for reply in [&trail, &export, &checkpoints, &report, &own_export] {
        reply.expect(200);
        for foreign in [bravo.id.to_string(), bravo.owner_id.to_string()] {
            assert!(!reply.text.contains(&foreign), "B's id in A's audit trail");
        }
    }
    let b_trail = app.get("/v1/audit?limit=200", &bravo.owner_token).await;
    assert!(
        !b_trail
            .expect(200)
            .text
            .contains(&alpha.owner_id.to_string())
    );

    // B is untouched.
    let b_owner = bravo.owner_token.as_str();
    let user = app.get(&format!("/v1/users/{b_user}"), b_owner).await;
    user.expect(200);
    assert_eq!(user.str("status"), "active");
    assert!(user.body["display_name"].is_null());
    assert_eq!(user.body["roles"], json!(["member"]));
    let key = app.get(&format!("/v1/api-keys/{b_key}"), b_owner).await;
    assert!(key.expect(200).body["revoked_at"].is_null());
    let role = app.get("/v1/roles/bravo-role", b_owner).await;
    assert_eq!(role.expect(200).body["permissions"], json!(["chat:read"]));
    assert_eq!(
        app.get("/v1/tenant", b_owner).await.expect(200).str("name"),
        "bravo Inc."
    );
    app.get("/v1/me", &b_user_token).await.expect(200);
    app.get("/v1/me", &b_key_secret).await.expect(200);
    let b_messages = app
        .get(
            &format!("/v1/conversations/{b_chat}/messages"),
            &bravo.owner_token,
        )
        .await;
    assert_eq!(
        b_messages.expect(200).body["items"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "B's turn is intact"
    );
    let b_providers = app.get("/v1/providers", &bravo.owner_token).await;
    assert_eq!(
        b_providers.expect(200).body[0]["base_url"],
        "https://llm.bravo.example/v1"
    );
    let b_aliases = app.get("/v1/model-aliases", &bravo.owner_token).await;
    assert_eq!(
        b_aliases.expect(200).body[0]["target"],
        "karen-offline-extractive"
    );
    let b_budgets = app.get("/v1/budgets", &bravo.owner_token).await;
    assert!(
        b_budgets.expect(200).text.contains(&b_budget),
        "B's budget survived A's attempts"
    );
    let b_memory_after = app
        .get(&format!("/v1/memories/{b_memory}"), &bravo.owner_token)
        .await;
    assert_eq!(
        b_memory_after.expect(200).str("content"),
        "Bravo zanzibar launch codes are kept offline"
    );
    let b_found = app
        .post(
            "/v1/search",
            &b_user_token,
            json!({"query": "zanzibar", "limit": 10}),
        )
        .await;
    let b_found = b_found.expect(200);
    assert_eq!(
        b_found.body["passages"][0]["document_id"],
        b_document.as_str()
    );
    assert_eq!(
        b_found.body["memories"].as_array().unwrap().len(),
        2,
        "B's member recalls their own and the shared memory: {}",
        b_found.text
    );
    let b_persona_after = app
        .get(&format!("/v1/personas/{b_persona}"), &bravo.owner_token)
        .await;
    assert_eq!(b_persona_after.expect(200).str("name"), "Bravo");
    app.token("bravo", &bravo.owner_email, PASSWORD).await;

    let b_sso = app.get("/v1/tenant/sso/oidc", &bravo.owner_token).await;
    assert_eq!(b_sso.expect(200).str("client_id"), OIDC_CLIENT_ID);
    let b_saml_after = app.get("/v1/tenant/sso/saml", &bravo.owner_token).await;
    assert_eq!(b_saml_after.expect(200).str("id"), b_saml);
    let b_mfa = app.get("/v1/auth/mfa", &b_user_token).await;
    assert_eq!(
        b_mfa.expect(200).str("totp"),
        "pending",
        "B's enrollment untouched"
    );
    // Every bearer-secured operation of the API was exercised above.
    let document = app.call("GET", "/openapi.json", None, None).await;
    let mut secured = BTreeSet::new();
    for (path, item) in document.body["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let bearer = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            if bearer {
                secured.insert((method.clone(), path.clone()));
            }
        }
    }
    let missed: Vec<_> = secured.difference(&t.covered).collect();
    assert!(
        missed.is_empty(),
        "the isolation suite does not exercise: {missed:?}"
    );
    app.stop().await;
}

/// A credential cannot be re-pointed at another tenant: an API key whose
/// embedded tenant id is swapped for B's is unknown there.
async fn credentials_are_bound_to_their_tenant(backend: Backend) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Some(app) = spawn(backend).await else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let bravo = app.create_tenant("bravo").await;
    let (_, key) = app
        .create_api_key(&alpha.owner_token, json!({"name": "k"}))
        .await;
    let mut raw = URL_SAFE_NO_PAD
        .decode(key.trim_start_matches("krn_"))
        .unwrap();
    raw[1..17].copy_from_slice(bravo.id.as_bytes());
    let moved = format!("krn_{}", URL_SAFE_NO_PAD.encode(&raw));
    app.get("/v1/me", &moved)
        .await
        .expect_problem(401, "invalid_token");
    // The same for a refresh token.
    let mut raw = URL_SAFE_NO_PAD
        .decode(alpha.owner_refresh.trim_start_matches("krr_"))
        .unwrap();
    raw[1..17].copy_from_slice(bravo.id.as_bytes());
    let moved = format!("krr_{}", URL_SAFE_NO_PAD.encode(&raw));
    app.call(
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": moved})),
    )
    .await
    .expect_problem(401, "invalid_token");
    // The same for a password token: B has no such token.
    let reset = format!("/v1/users/{}/password-reset", alpha.owner_id);
    let issued = app.post(&reset, &alpha.owner_token, json!({})).await;
    let token = issued.expect(201).str("token").to_owned();
    let mut raw = URL_SAFE_NO_PAD
        .decode(token.trim_start_matches("kps_"))
        .unwrap();
    raw[1..17].copy_from_slice(bravo.id.as_bytes());
    let moved = format!("kps_{}", URL_SAFE_NO_PAD.encode(&raw));
    let body = json!({"token": moved, "new_password": "another fine passphrase"});
    app.call("POST", "/v1/auth/password", None, Some(body))
        .await
        .expect_problem(401, "invalid_token");
    app.login("alpha", &alpha.owner_email, PASSWORD)
        .await
        .expect(200);
    // Operator keys are not tenant credentials, and tenant credentials are not operator keys.
    app.get("/v1/me", &app.operator_key)
        .await
        .expect_problem(401, "invalid_token");
    app.get("/v1/platform/tenants", &alpha.owner_token)
        .await
        .expect_problem(401, "invalid_token");
    app.get("/v1/platform/tenants", &key)
        .await
        .expect_problem(401, "invalid_token");
    // The platform audit chain is the operator's alone.
    for credential in [&alpha.owner_token, &key] {
        app.get("/v1/platform/audit", credential)
            .await
            .expect_problem(401, "invalid_token");
    }
    app.stop().await;
}

on_both_backends!(
    tenants_cannot_reach_each_other,
    credentials_are_bound_to_their_tenant
);
