//! Hardening of the HTTP surface: every security header on a sample of public,
//! authenticated and error responses (and CORS preflights); HSTS only when
//! asked for; CORS only for listed origins; every JSON request body refuses
//! unknown fields and bounds its strings and lists (swept over every route
//! with a body, from the OpenAPI document); credential errors that say nothing
//! about which accounts or tokens exist.

use std::collections::BTreeSet;

use karen_testkit::{Backend, PASSWORD, Reply, TestApp};
use serde_json::{Value, json};

use super::*;

/// Every header, with its exact value, that every response carries.
const EXPECTED_HEADERS: [(&str, &str); 7] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=(), interest-cohort=()",
    ),
    ("cache-control", "no-store"),
];

#[track_caller]
fn expect_every_security_header(reply: &Reply, what: &str) {
    for (name, value) in EXPECTED_HEADERS {
        assert_eq!(
            reply.header(name),
            Some(value),
            "{name} on {what} (status {})",
            reply.status
        );
    }
}

async fn options(app: &TestApp, path: &str, origin: &str, method: &str) -> Reply {
    send(
        app.http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", app.base_url))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            ),
    )
    .await
}

async fn get_from(app: &TestApp, path: &str, origin: &str, token: Option<&str>) -> Reply {
    let mut request = app
        .http
        .get(format!("{}{path}", app.base_url))
        .header("origin", origin);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

async fn every_security_header_on_public_authenticated_and_error_responses(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let token = tenant.owner_token.as_str();
    let sample = [
        (
            "public GET /healthz",
            app.call("GET", "/healthz", None, None).await,
        ),
        (
            "public GET /openapi.json",
            app.call("GET", "/openapi.json", None, None).await,
        ),
        (
            "login",
            app.login("acme", &tenant.owner_email, PASSWORD).await,
        ),
        ("authenticated GET /v1/me", app.get("/v1/me", token).await),
        (
            "authenticated GET /v1/users",
            app.get("/v1/users", token).await,
        ),
        (
            "authenticated GET /v1/auth/sessions",
            app.get("/v1/auth/sessions", token).await,
        ),
        (
            "404 session",
            app.delete(
                &format!("/v1/auth/sessions/{}", uuid::Uuid::now_v7()),
                token,
            )
            .await,
        ),
        (
            "authenticated POST /v1/conversations",
            app.post("/v1/conversations", token, json!({"title": "t"}))
                .await,
        ),
        ("401", app.call("GET", "/v1/me", None, None).await),
        ("404 route", app.call("GET", "/v1/nope", None, None).await),
        (
            "404 object",
            app.get(&format!("/v1/users/{}", uuid::Uuid::now_v7()), token)
                .await,
        ),
        ("405", app.call("DELETE", "/v1/me", None, None).await),
        (
            "422",
            app.post("/v1/users", token, json!({"email": "x"})).await,
        ),
        (
            "401 login",
            app.login("acme", &tenant.owner_email, "wrong password!")
                .await,
        ),
        (
            "413",
            // Just over the default 1 MiB limit.
            post_raw(
                &app,
                "/v1/users",
                Some(token),
                Some("application/json"),
                vec![b' '; (1 << 20) + 1024],
            )
            .await,
        ),
        (
            "preflight",
            options(&app, "/v1/me", "https://evil.example", "GET").await,
        ),
    ];
    let mut seen = BTreeSet::new();
    for (what, reply) in &sample {
        expect_every_security_header(reply, what);
        seen.insert(reply.status);
        // Without TLS and without `server.hsts`, no HSTS.
        assert_eq!(reply.header("strict-transport-security"), None, "{what}");
    }
    for status in [200, 201, 401, 404, 405, 413, 422] {
        assert!(
            seen.contains(&status),
            "the sample covers {status}: {seen:?}"
        );
    }
    app.stop().await;
}

async fn hsts_is_sent_when_configured(backend: Backend) {
    let Some(app) = karen_testkit::spawn_with(backend, |config| {
        // Behind a proxy that terminates TLS.
        config.server.hsts = Some(true);
    })
    .await
    else {
        return;
    };
    for reply in [
        app.call("GET", "/healthz", None, None).await,
        app.call("GET", "/v1/nope", None, None).await,
    ] {
        assert_eq!(
            reply.header("strict-transport-security"),
            Some("max-age=31536000; includeSubDomains")
        );
    }
    app.stop().await;
}

const CONSOLE: &str = "https://console.acme.test";

async fn cors_answers_listed_origins_only(backend: Backend) {
    let Some(app) = karen_testkit::spawn_with(backend, |config| {
        config.server.cors_allowed_origins = vec![CONSOLE.into(), "http://localhost:5173".into()];
    })
    .await
    else {
        return;
    };
    let tenant = app.create_tenant("acme").await;

    // Preflight from a listed origin: allowed, with the methods and headers.
    let allowed = options(&app, "/v1/conversations", CONSOLE, "POST").await;
    assert!(allowed.status < 300, "{} {}", allowed.status, allowed.text);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(CONSOLE));
    let methods = allowed
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");
    let headers = allowed
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    // Never a wildcard, never credentials (Karen uses no cookies).
    assert_eq!(allowed.header("access-control-allow-credentials"), None);
    expect_every_security_header(&allowed, "allowed preflight");

    // The other listed origin too; each answer names only the asking origin.
    let local = options(&app, "/v1/me", "http://localhost:5173", "GET").await;
    assert_eq!(
        local.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );

    // Unlisted origins, look-alikes included, get no CORS grant.
    for origin in [
        "https://evil.example",
        "https://console.acme.test.evil.example",
        "http://console.acme.test",
        "https://console.acme.test:8443",
        "null",
    ] {
        let denied = options(&app, "/v1/conversations", origin, "POST").await;
        assert_eq!(
            denied.header("access-control-allow-origin"),
            None,
            "{origin}"
        );
        expect_every_security_header(&denied, "denied preflight");
        let read = get_from(&app, "/v1/me", origin, Some(tenant.owner_token.as_str())).await;
        assert_eq!(read.header("access-control-allow-origin"), None, "{origin}");
    }

    // Actual requests: the listed origin may read the answer (and errors).
    let read = get_from(&app, "/v1/me", CONSOLE, Some(tenant.owner_token.as_str())).await;
    read.expect(200);
    assert_eq!(read.header("access-control-allow-origin"), Some(CONSOLE));
    let exposed = read
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    let vary = read.header("vary").unwrap_or_default().to_ascii_lowercase();
    assert!(vary.contains("origin"), "responses vary by origin: {vary}");
    let refused = get_from(&app, "/v1/me", CONSOLE, None).await;
    refused.expect(401);
    assert_eq!(refused.header("access-control-allow-origin"), Some(CONSOLE));
    app.stop().await;
}

async fn cors_is_off_without_an_allowlist(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let preflight = options(&app, "/v1/me", CONSOLE, "GET").await;
    assert_eq!(preflight.header("access-control-allow-origin"), None);
    assert!(preflight.status >= 400, "{}", preflight.status);
    let read = get_from(&app, "/healthz", CONSOLE, None).await;
    assert_eq!(read.header("access-control-allow-origin"), None);
    app.stop().await;
}

/// Whether `path` is one of the OpenAI-compatible routes, which accept (and
/// ignore) OpenAI SDK fields Karen does not implement.
const SCIM_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const SCIM_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const SCIM_PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The SCIM routes answer in SCIM's error shape (RFC 7644 §3.12), not problem+json.
fn scim(path: &str) -> bool {
    path.starts_with("/scim/")
}

/// A SCIM error refusing the request (4xx, `application/scim+json`, a detail).
#[track_caller]
fn expect_scim_refusal(reply: &Reply, status: Option<u16>, scim_type: Option<&str>, what: &str) {
    assert!(
        status.map_or((400..500).contains(&reply.status), |s| s == reply.status),
        "{what}: {} {}",
        reply.status,
        reply.text.chars().take(300).collect::<String>()
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/scim+json"),
        "{what}"
    );
    assert_eq!(reply.body["status"], reply.status.to_string(), "{what}");
    if let Some(scim_type) = scim_type {
        assert_eq!(reply.body["scimType"], scim_type, "{what}: {}", reply.text);
    }
    assert!(
        reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}"
    );
}

fn openai_compatible(path: &str) -> bool {
    matches!(path, "/v1/chat/completions" | "/v1/embeddings")
}

/// `(METHOD, path)` of every operation with a JSON body, from the OpenAPI document.
fn json_body_operations() -> BTreeSet<(String, String)> {
    let document = serde_json::to_value(karen_http::openapi_document()).unwrap();
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch", "delete"] {
            let json = &item[method]["requestBody"]["content"]["application/json"];
            if json.is_object() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// The ids and credentials the sweep needs.
struct Fixture {
    owner: String,
    operator: String,
    ids: Vec<(&'static str, String)>,
}

impl Fixture {
    async fn new(app: &TestApp) -> Self {
        let tenant = app.create_tenant("sweep").await;
        let token = tenant.owner_token.clone();
        let (user_id, _) = app
            .create_user(&tenant, "member@sweep.test", &["member"])
            .await;
        let conversation = app
            .post("/v1/conversations", &token, json!({"title": "t"}))
            .await;
        conversation.expect(201);
        let persona = app
            .post(
                "/v1/personas",
                &token,
                json!({"name": "p", "system_prompt": "be brief"}),
            )
            .await;
        persona.expect(201);
        let memory = app
            .post("/v1/memories", &token, json!({"content": "likes tea"}))
            .await;
        memory.expect(201);
        let provider = app
            .post(
                "/v1/providers",
                &token,
                json!({"name": "up", "kind": "openai", "base_url": "https://api.example.com/v1", "models": ["m1"]}),
            )
            .await;
        provider.expect(201);
        app.post(
            "/v1/roles",
            &token,
            json!({"name": "sweeper", "permissions": ["chat:write"]}),
        )
        .await
        .expect(201);
        let group = app
            .post(
                "/scim/v2/Groups",
                &token,
                json!({"schemas": [SCIM_GROUP], "displayName": "sweepers"}),
            )
            .await;
        group.expect(201);
        let id = |reply: &Reply| {
            reply.body["id"]
                .as_str()
                .or(reply.body["persona"]["id"].as_str())
                .or(reply.body["memory"]["id"].as_str())
                .or(reply.body["provider"]["id"].as_str())
                .or(reply.body["conversation"]["id"].as_str())
                .unwrap_or_else(|| panic!("an id in {}", reply.text))
                .to_owned()
        };
        Self {
            owner: token,
            operator: app.operator_key.clone(),
            ids: vec![
                ("{user_id}", user_id.to_string()),
                ("{group_id}", id(&group)),
                ("{tenant_id}", tenant.id.to_string()),
                ("{conversation_id}", id(&conversation)),
                ("{persona_id}", id(&persona)),
                ("{memory_id}", id(&memory)),
                ("{provider_id}", id(&provider)),
                ("{name}", "sweeper".into()),
                ("{alias}", "sweep-alias".into()),
            ],
        }
    }

    fn path(&self, template: &str) -> String {
        let mut path = template.to_owned();
        for (parameter, value) in &self.ids {
            path = path.replace(parameter, value);
        }
        assert!(!path.contains('{'), "unknown parameter in {template}");
        path
    }

    fn token(&self, path: &str) -> Option<&str> {
        if path.starts_with("/v1/platform/") {
            Some(self.operator.as_str())
        } else if (path.starts_with("/v1/auth/")
            && !path.starts_with("/v1/auth/mfa")
            && !path.starts_with("/v1/auth/sessions"))
            || path == "/v1/signup"
        {
            None
        } else {
            Some(self.owner.as_str())
        }
    }
}

/// A body each operation would accept, every field filled, so that changing
/// one field is what a refusal is about.
fn full_body(method: &str, path: &str) -> Value {
    match (method, path) {
        ("POST", "/v1/auth/login") => {
            json!({"tenant": "sweep", "email": "owner@sweep.test", "password": PASSWORD})
        }
        ("POST", "/v1/auth/refresh") => json!({"refresh_token": "krn_rt_x"}),
        ("POST", "/v1/auth/login/mfa") => {
            json!({"challenge": "krm_x", "code": "123456", "recovery_code": "abcd-efgh-ijkl-mnop"})
        }
        ("POST", "/v1/auth/login/mfa/enroll") => json!({"challenge": "krm_x"}),
        ("POST", "/v1/auth/mfa/totp/confirm") => json!({"code": "123456"}),
        ("DELETE", "/v1/auth/mfa/totp") => json!({"code": "123456", "password": PASSWORD}),
        ("POST", "/v1/signup") => json!({"tenant_slug": "newco", "tenant_name": "New Co",
            "email": "o@newco.test", "display_name": "O", "password": PASSWORD}),
        ("POST", "/v1/auth/password") => {
            json!({"token": "kps_x", "new_password": "another fine passphrase"})
        }
        ("POST", "/v1/me/password") => {
            json!({"current_password": PASSWORD, "new_password": "another fine passphrase"})
        }
        ("POST", "/v1/api-keys") => json!({"name": "k", "scopes": ["chat:write"]}),
        ("PUT", "/v1/platform/tenants/{tenant_id}/rate-limits") => json!({
            "tenant": {"requests": 100, "window_secs": 60},
            "user": {"requests": 10, "window_secs": 60},
            "api_key": {"requests": 10, "window_secs": 60}}),
        ("PUT", "/v1/tenant/retention") => json!({"conversations_days": 30, "memories_days": 30,
            "documents_days": 30, "usage_days": 30, "audit_days": 400}),
        ("POST", "/v1/legal-holds") => json!({"scope": "tenant", "reason": "case 42"}),
        ("POST", "/v1/budgets") => json!({"scope": "tenant", "metric": "tokens", "period": "month",
            "limit": 1000, "enforcement": "block"}),
        ("POST", "/v1/conversations") | ("PATCH", "/v1/conversations/{conversation_id}") => {
            json!({"title": "t"})
        }
        ("POST", "/v1/conversations/{conversation_id}/messages") => {
            json!({"content": "hello", "stream": false, "model": "karen-offline-extractive"})
        }
        ("POST", "/v1/memories") | ("PATCH", "/v1/memories/{memory_id}") => {
            json!({"content": "likes tea", "kind": "preference", "importance": 3, "tier": "long", "shared": false})
        }
        ("POST", "/v1/memories/search") | ("POST", "/v1/search") => {
            json!({"query": "tea", "limit": 5})
        }
        ("POST", "/v1/personas") | ("PATCH", "/v1/personas/{persona_id}") => {
            json!({"name": "p", "system_prompt": "be brief", "model": "m1", "temperature": 0.5,
                "max_tokens": 100, "shared": false})
        }
        ("POST", "/v1/platform/tenants") => {
            json!({"slug": "other", "name": "Other", "plan": "free",
            "owner_email": "o@other.test", "owner_name": "O", "owner_password": PASSWORD})
        }
        ("PATCH", "/v1/platform/tenants/{tenant_id}") => json!({"name": "Sweep", "plan": "free"}),
        ("POST", "/v1/providers") | ("PATCH", "/v1/providers/{provider_id}") => {
            json!({"name": "up", "kind": "openai", "base_url": "https://api.example.com/v1",
                "api_key": "sk-test", "models": ["m1"], "position": 1})
        }
        ("PUT", "/v1/model-aliases/{alias}") => json!({"target": "m1"}),
        ("POST", "/v1/roles") => {
            json!({"name": "r2", "description": "d", "permissions": ["chat:write"]})
        }
        ("PATCH", "/v1/roles/{name}") => json!({"description": "d", "permissions": ["chat:write"]}),
        ("PATCH", "/v1/tenant") => json!({"name": "Sweep", "settings": {"default_role": "member",
            "allowed_email_domains": ["sweep.test"], "memory_extraction": true, "mfa_required": "off"}}),
        ("POST", "/v1/users") => json!({"email": "u@sweep.test", "display_name": "U",
            "password": PASSWORD, "roles": ["member"]}),
        ("PATCH", "/v1/users/{user_id}") => json!({"email": "m@sweep.test", "display_name": "M",
            "current_password": PASSWORD}),
        ("PUT", "/v1/users/{user_id}/roles") => json!({"roles": ["member"]}),
        ("POST", "/v1/users/{user_id}/erase") => {
            json!({"confirm_email": "m@sweep.test", "documents": "keep"})
        }
        ("POST", "/scim/v2/Users") | ("PUT", "/scim/v2/Users/{user_id}") => {
            json!({"schemas": [SCIM_USER], "userName": "member@sweep.test", "externalId": "e-1",
                "displayName": "M", "name": {"givenName": "M", "familyName": "S"},
                "emails": [{"value": "member@sweep.test", "type": "work", "primary": true}],
                "active": true})
        }
        ("POST", "/scim/v2/Groups") | ("PUT", "/scim/v2/Groups/{group_id}") => {
            json!({"schemas": [SCIM_GROUP], "displayName": "sweepers", "externalId": "g-1",
                "members": [{"value": "0190c0de-0000-7000-8000-000000000000"}]})
        }
        ("PATCH", "/scim/v2/Users/{user_id}") | ("PATCH", "/scim/v2/Groups/{group_id}") => {
            json!({"schemas": [SCIM_PATCH], "Operations": [{"op": "replace", "path": "externalId", "value": "e-2"}]})
        }
        ("PUT", "/v1/tenant/sso/oidc") => json!({"issuer": "https://idp.example.com",
            "client_id": "karen", "client_secret": "s3cret", "scopes": ["email"],
            "role_mapping": {"claim": "groups", "values": {"eng": "member"}, "default_role": "member"},
            "enabled": true}),
        ("PUT", "/v1/tenant/sso/saml") => json!({
            "idp_metadata": karen_testkit::saml_idp::saml_idp_metadata(),
            "email_attribute": "email", "name_attribute": "displayName",
            "role_mapping": {"claim": "groups", "values": {"eng": "member"}, "default_role": "member"},
            "enabled": true}),
        _ => panic!("no sample body for {method} {path}: add one to full_body"),
    }
}

async fn send_json(
    app: &TestApp,
    fixture: &Fixture,
    method: &str,
    path: &str,
    body: Value,
) -> Reply {
    app.call(method, &fixture.path(path), fixture.token(path), Some(body))
        .await
}

async fn every_request_body_refuses_unknown_fields(backend: Backend) {
    let Some(app) = karen_testkit::spawn_with(backend, |c| c.features.self_signup = true).await
    else {
        return;
    };
    let fixture = Fixture::new(&app).await;
    let operations = json_body_operations();
    assert!(operations.len() >= 20, "{operations:?}");
    for (method, path) in operations.iter().filter(|(_, p)| !openai_compatible(p)) {
        // Alone, and next to a complete body.
        let mut with_extra = full_body(method, path);
        with_extra["zz_not_a_field"] = json!(1);
        for body in [json!({"zz_not_a_field": 1}), with_extra] {
            let reply = send_json(&app, &fixture, method, path, body).await;
            if scim(path) {
                let what = format!("{method} {path}");
                expect_scim_refusal(&reply, Some(400), Some("invalidSyntax"), &what);
            } else {
                expect_problem(&reply, 422, "validation_failed");
            }
            assert!(
                reply.str("detail").contains("zz_not_a_field"),
                "{method} {path}: {}",
                reply.text
            );
        }
    }
    // Nested objects too (tenant settings).
    let body = json!({"settings": {"default_role": "member", "allowed_email_domains": [],
        "zz_not_a_field": true}});
    let reply = app.patch("/v1/tenant", &fixture.owner, body).await;
    expect_problem(&reply, 422, "validation_failed");

    // The OpenAI-compatible routes keep accepting fields of the OpenAI SDKs.
    let (_, key) = app
        .create_api_key(
            &fixture.owner,
            json!({"name": "sdk", "scopes": ["chat:write", "embeddings:create"]}),
        )
        .await;
    let reply = app
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "karen-offline-extractive", "messages": [{"role": "user", "content": "hi"}],
                "user": "u-1", "logit_bias": {}, "store": false, "metadata": {"a": "b"}}),
        )
        .await;
    assert!(reply.status < 300, "{}", reply.text);
    app.stop().await;
}

/// One field of `body` made far too long (a string) or far too many (a list).
fn oversized(value: &Value) -> Option<Value> {
    match value {
        Value::String(_) => Some(Value::String("x".repeat(100_000))),
        Value::Array(items) => {
            let item = items.first().cloned().unwrap_or(json!("x"));
            Some(Value::Array(vec![item; 5_000]))
        }
        _ => None,
    }
}

async fn every_request_body_bounds_its_strings_and_lists(backend: Backend) {
    let Some(app) = karen_testkit::spawn_with(backend, |c| c.features.self_signup = true).await
    else {
        return;
    };
    let fixture = Fixture::new(&app).await;
    let mut checked = 0;
    for (method, path) in json_body_operations()
        .iter()
        .filter(|(_, p)| !openai_compatible(p))
    {
        let body = full_body(method, path);
        let fields: Vec<(String, Value)> = body
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (field, value) in fields {
            let Some(huge) = oversized(&value) else {
                continue;
            };
            let mut changed = body.clone();
            changed[&field] = huge;
            let reply = send_json(&app, &fixture, method, path, changed).await;
            let what = format!("{method} {path} with an oversized {field}");
            if scim(path) {
                expect_scim_refusal(&reply, None, None, &what);
                assert!(reply.text.len() < 4_000, "{what}: the input is echoed back");
                checked += 1;
                continue;
            }
            assert!(
                (400..500).contains(&reply.status),
                "{what}: {} {}",
                reply.status,
                reply.text.chars().take(300).collect::<String>()
            );
            assert_eq!(
                reply.header("content-type"),
                Some("application/problem+json"),
                "{what}"
            );
            assert!(
                reply.body["code"].as_str().is_some_and(|c| !c.is_empty()),
                "{what}"
            );
            assert!(reply.text.len() < 4_000, "{what}: the input is echoed back");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} fields swept");
    // Nested lists too: a tenant's allowed email domains.
    let domains: Vec<String> = (0..5_000).map(|i| format!("d{i}.test")).collect();
    let body = json!({"settings": {"default_role": "member", "allowed_email_domains": domains}});
    let reply = app.patch("/v1/tenant", &fixture.owner, body).await;
    expect_problem(&reply, 422, "validation_failed");
    app.stop().await;
}

/// A problem body (or an OpenAI-shaped error) without its per-request id.
fn without_request_id(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("request_id");
        if let Some(error) = map.get_mut("error").and_then(Value::as_object_mut) {
            error.remove("request_id");
        }
    }
    assert_ne!(body, Value::Null, "a body explains the refusal");
    body
}

async fn token_and_key_errors_say_nothing_about_what_exists(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    // (API keys first: reusing a rotated refresh token below revokes the
    // owner's session, by design.)
    // API keys: a revoked key, one never issued, and garbage answer alike.
    let (key_id, key) = app
        .create_api_key(
            &tenant.owner_token,
            json!({"name": "k", "scopes": ["chat:write"]}),
        )
        .await;
    app.delete(&format!("/v1/api-keys/{key_id}"), &tenant.owner_token)
        .await;
    let never_issued = format!("{}A", &key[..key.len() - 1]);
    for path in ["/v1/models", "/v1/me"] {
        let keys = [
            app.get(path, &key).await,
            app.get(path, &never_issued).await,
            app.get(path, "krn_garbage").await,
        ];
        for reply in &keys {
            assert_eq!(reply.status, 401, "{path}: {}", reply.text);
            assert_eq!(
                without_request_id(&reply.body),
                without_request_id(&keys[0].body),
                "{path}: {}",
                reply.text
            );
        }
    }
    // Sessions: one already ended, one never opened, and another user's
    // answer alike.
    let (_, member) = app
        .create_user(&tenant, "member@acme.test", &["member"])
        .await;
    let me = app.get("/v1/me", &member).await;
    let member_session = me.expect(200).str("session_id").to_owned();
    let ended = app.login("acme", &tenant.owner_email, PASSWORD).await;
    let ended = ended.expect(200).str("session_id").to_owned();
    let end = |id: String| {
        let path = format!("/v1/auth/sessions/{id}");
        let token = tenant.owner_token.clone();
        let app = &app;
        async move { app.delete(&path, &token).await }
    };
    end(ended.clone()).await.expect(204);
    let sessions = [
        end(ended).await,
        end(uuid::Uuid::now_v7().to_string()).await,
        end(member_session).await,
    ];
    for reply in &sessions {
        reply.expect_problem(404, "not_found");
        assert_eq!(
            without_request_id(&reply.body),
            without_request_id(&sessions[0].body),
            "{}",
            reply.text
        );
    }
    // Refresh: a rotated (used) token, a token never issued, and garbage answer alike.
    let used = tenant.owner_refresh.clone();
    app.call(
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": used})),
    )
    .await
    .expect(200);
    let never_issued = format!("{}x", &used[..used.len() - 1]);
    let refreshes = [
        app.call(
            "POST",
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": used})),
        )
        .await,
        app.call(
            "POST",
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": never_issued})),
        )
        .await,
        app.call(
            "POST",
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": "garbage"})),
        )
        .await,
    ];
    for reply in &refreshes {
        reply.expect_problem(401, "invalid_token");
        assert_eq!(
            without_request_id(&reply.body),
            without_request_id(&refreshes[0].body),
            "{}",
            reply.text
        );
    }
    app.stop().await;
}

on_both_backends!(
    every_security_header_on_public_authenticated_and_error_responses,
    hsts_is_sent_when_configured,
    cors_answers_listed_origins_only,
    cors_is_off_without_an_allowlist,
    every_request_body_refuses_unknown_fields,
    every_request_body_bounds_its_strings_and_lists,
    token_and_key_errors_say_nothing_about_what_exists,
);
