//! Request ids, security headers, health endpoints and the OpenAPI document.

use std::collections::BTreeSet;

use karen_testkit::{Backend, PASSWORD};
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;

async fn request_id_is_echoed_or_generated(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let with_id = async |path: &str, id: &str| {
        get_with(
            &app,
            path,
            "x-request-id",
            HeaderValue::from_str(id).unwrap(),
        )
        .await
    };
    let at_limit = "a".repeat(128);
    for id in ["abc-123", "client.id:42_x", at_limit.as_str()] {
        let reply = with_id("/healthz", id).await;
        reply.expect(200);
        assert_eq!(reply.header("x-request-id"), Some(id));
        // A client id is also the problem's request_id.
        let reply = with_id("/v1/me", id).await;
        expect_problem(&reply, 401, "unauthenticated");
        assert_eq!(reply.body["request_id"], id);
    }

    // Not even text: a generated id, never an error.
    let binary = HeaderValue::from_bytes(b"id-\xff\xfe").unwrap();
    let reply = get_with(&app, "/healthz", "x-request-id", binary).await;
    reply.expect(200);
    assert!(Uuid::parse_str(reply.header("x-request-id").unwrap_or_default()).is_ok());

    let too_long = "a".repeat(500);
    for unsafe_id in [
        "has spaces in it",
        &too_long,
        "semi;colon",
        "quote\"d",
        "<script>",
        "",
    ] {
        for path in ["/healthz", "/v1/nope"] {
            let reply = with_id(path, unsafe_id).await;
            let echoed = reply
                .header("x-request-id")
                .expect("a generated request id");
            assert_ne!(echoed, unsafe_id);
            assert!(
                Uuid::parse_str(echoed).is_ok(),
                "'{unsafe_id}' replaced by {echoed}"
            );
            if path == "/v1/nope" {
                expect_problem(&reply, 404, "route_not_found");
            }
        }
    }

    let first = app.call("GET", "/healthz", None, None).await;
    let second = app.call("GET", "/healthz", None, None).await;
    let first = first
        .header("x-request-id")
        .expect("generated id")
        .to_owned();
    let second = second
        .header("x-request-id")
        .expect("generated id")
        .to_owned();
    assert!(Uuid::parse_str(&first).is_ok(), "{first}");
    assert_ne!(first, second, "each request gets its own id");
    app.stop().await;
}

async fn security_headers_are_on_every_response(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let successes = [
        app.call("GET", "/healthz", None, None).await,
        app.call("GET", "/readyz", None, None).await,
        app.call("GET", "/openapi.json", None, None).await,
        app.get("/v1/me", &tenant.owner_token).await,
        app.login("acme", &tenant.owner_email, PASSWORD).await,
    ];
    let failures = [
        app.call("GET", "/v1/me", None, None).await,
        app.call("GET", "/v1/nope", None, None).await,
        app.call("DELETE", "/v1/me", None, None).await,
        app.get("/v1/users/not-a-uuid", &tenant.owner_token).await,
        app.login("acme", &tenant.owner_email, "wrong password!")
            .await,
    ];
    for reply in &successes {
        assert!(reply.status < 300, "{}", reply.text);
    }
    for reply in &failures {
        assert!((400..500).contains(&reply.status), "{}", reply.text);
    }
    for reply in successes.iter().chain(&failures) {
        expect_security_headers(reply);
        assert!(
            reply.header("x-request-id").is_some(),
            "x-request-id on every response"
        );
    }
    app.stop().await;
}

async fn health_and_readiness(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let reply = app.call("GET", "/healthz", None, None).await;
    reply.expect(200);
    assert_eq!(reply.body, json!({"status": "ok"}));
    assert!(
        reply
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );

    let reply = app.call("GET", "/readyz", None, None).await;
    reply.expect(200);
    assert_eq!(reply.str("status"), "ready");
    let expected_backend = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(reply.str("backend"), expected_backend);
    let components = reply.body["components"].as_array().expect("components");
    for name in ["database", "cache"] {
        let component = components.iter().find(|c| c["name"] == name);
        let component = component.unwrap_or_else(|| panic!("no {name}: {}", reply.text));
        assert_eq!(component["ok"], true, "{name}: {}", reply.text);
    }
    app.stop().await;
}

/// Every operation declared by a `#[utoipa::path]` in crates/http/src/routes.
const DECLARED_ROUTES: &str = "
    get /healthz  get /readyz
    post /v1/auth/login  post /v1/auth/refresh  post /v1/auth/logout  post /v1/auth/logout-all
    post /v1/auth/password
    get /v1/auth/sessions  delete /v1/auth/sessions/{session_id}
    post /v1/signup  get /v1/me  post /v1/me/password
    get /v1/users  post /v1/users  get /v1/users/{user_id}  patch /v1/users/{user_id}
    put /v1/users/{user_id}/roles  post /v1/users/{user_id}/disable
    post /v1/users/{user_id}/enable
    post /v1/users/{user_id}/unlock  post /v1/users/{user_id}/password-reset
    get /v1/permissions  get /v1/roles  post /v1/roles
    get /v1/roles/{name}  patch /v1/roles/{name}  delete /v1/roles/{name}
    get /v1/api-keys  post /v1/api-keys  get /v1/api-keys/{key_id}  delete /v1/api-keys/{key_id}
    get /v1/tenant  patch /v1/tenant
    get /v1/platform/tenants  post /v1/platform/tenants
    get /v1/platform/tenants/{tenant_id}  patch /v1/platform/tenants/{tenant_id}
    delete /v1/platform/tenants/{tenant_id}
    post /v1/platform/tenants/{tenant_id}/suspend  post /v1/platform/tenants/{tenant_id}/resume
    get /v1/platform/audit
    get /v1/conversations  post /v1/conversations
    get /v1/conversations/{conversation_id}  patch /v1/conversations/{conversation_id}
    delete /v1/conversations/{conversation_id}
    get /v1/conversations/{conversation_id}/messages  post /v1/conversations/{conversation_id}/messages
    get /v1/personas  post /v1/personas
    get /v1/personas/{persona_id}  patch /v1/personas/{persona_id}  delete /v1/personas/{persona_id}
    get /v1/usage  get /v1/tenant/insights  get /v1/admin/insights
    post /v1/chat/completions  get /v1/models
    get /v1/budgets  post /v1/budgets  delete /v1/budgets/{budget_id}
    get /v1/providers  post /v1/providers  patch /v1/providers/{provider_id}  delete /v1/providers/{provider_id}
    get /v1/model-aliases  put /v1/model-aliases/{alias}  delete /v1/model-aliases/{alias}
    get /v1/tenant/retention  put /v1/tenant/retention  post /v1/tenant/retention/run
    get /v1/legal-holds  post /v1/legal-holds  delete /v1/legal-holds/{hold_id}
    get /scim/v2/Users  post /scim/v2/Users  get /scim/v2/Users/{user_id}  put /scim/v2/Users/{user_id}
    patch /scim/v2/Users/{user_id}  delete /scim/v2/Users/{user_id}
    get /scim/v2/Groups  post /scim/v2/Groups  get /scim/v2/Groups/{group_id}
    put /scim/v2/Groups/{group_id}  patch /scim/v2/Groups/{group_id}  delete /scim/v2/Groups/{group_id}
    get /scim/v2/ServiceProviderConfig  get /scim/v2/ResourceTypes  get /scim/v2/Schemas
    get /v1/tenant/sso/oidc  put /v1/tenant/sso/oidc  delete /v1/tenant/sso/oidc
    get /v1/auth/sso/oidc/start  get /v1/auth/sso/oidc/callback
    get /v1/tenant/sso/saml  put /v1/tenant/sso/saml  delete /v1/tenant/sso/saml
    get /v1/auth/sso/saml/{tenant_slug}/metadata  get /v1/auth/sso/saml/start
    post /v1/auth/sso/saml/acs";

/// The routes that need no credential.
const PUBLIC_ROUTES: [&str; 11] = [
    "/healthz",
    "/readyz",
    "/v1/auth/login",
    "/v1/auth/refresh",
    "/v1/auth/password",
    "/v1/signup",
    "/v1/auth/sso/oidc/start",
    "/v1/auth/sso/oidc/callback",
    "/v1/auth/sso/saml/{tenant_slug}/metadata",
    "/v1/auth/sso/saml/start",
    "/v1/auth/sso/saml/acs",
];

fn declared_routes() -> Vec<(String, String)> {
    let words: Vec<&str> = DECLARED_ROUTES.split_whitespace().collect();
    words
        .chunks(2)
        .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
        .collect()
}

/// Every (method, path) operation in the document.
fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"]
        .as_object()
        .expect("the document has paths");
    let methods = [
        "get", "post", "put", "patch", "delete", "head", "options", "trace",
    ];
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        for method in methods.into_iter().filter(|m| item.get(*m).is_some()) {
            operations.insert((method.to_owned(), path.clone()));
        }
    }
    operations
}

/// Every `$ref` anywhere in `value`.
fn references(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => {
                        out.insert(target.clone());
                    }
                    _ => references(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, out)),
        _ => {}
    }
}

#[track_caller]
fn expect_problem_response(operation: &Value, status: &str, what: &str) {
    let response = &operation["responses"][status];
    assert!(
        response.is_object(),
        "{what} documents {status}: {operation}"
    );
    // The SCIM routes answer errors in SCIM's shape (RFC 7644 §3.12).
    let (media, schema) = if what.contains(" /scim/") {
        ("application/scim+json", "#/components/schemas/ScimError")
    } else {
        ("application/problem+json", "#/components/schemas/Problem")
    };
    assert_eq!(
        response["content"][media]["schema"]["$ref"], schema,
        "{what}: {status} is a problem"
    );
}

fn is_secured(operation: &Value) -> bool {
    operation["security"]
        .as_array()
        .is_some_and(|s| !s.is_empty())
}

async fn openapi_document_describes_every_route(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let reply = app.call("GET", "/openapi.json", None, None).await;
    reply.expect(200);
    assert!(
        reply
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let document = &reply.body;
    let version = document["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "OpenAPI 3.1.x, got {version}");
    assert!(
        document["info"]["title"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    let operations = documented_operations(document);
    for (method, path) in declared_routes() {
        let public = PUBLIC_ROUTES.contains(&path.as_str());
        let operation = &document["paths"][&path][&method];
        assert!(
            operations.contains(&(method.clone(), path.clone())),
            "{method} {path} missing"
        );
        assert_eq!(
            is_secured(operation),
            !public,
            "{method} {path}: security requirement"
        );
    }

    let schemas = &document["components"]["schemas"];
    for field in ["type", "title", "status", "detail", "code", "request_id"] {
        assert!(
            schemas["Problem"]["properties"][field].is_object(),
            "Problem.{field}"
        );
    }
    let schemes = &document["components"]["securitySchemes"];
    for (method, path) in &operations {
        let operation = &document["paths"][path][method];
        let what = format!("{method} {path}");
        expect_problem_response(operation, "400", &what);
        expect_problem_response(operation, "500", &what);
        if is_secured(operation) {
            expect_problem_response(operation, "401", &what);
            expect_problem_response(operation, "403", &what);
            let requirements = operation["security"].as_array().into_iter().flatten();
            for scheme in requirements
                .filter_map(Value::as_object)
                .flat_map(|r| r.keys())
            {
                assert!(
                    schemes[scheme].is_object(),
                    "{what}: undeclared scheme '{scheme}'"
                );
            }
        }
        if operation.get("requestBody").is_some() {
            // SCIM answers a refused value with 400 `invalidValue`, never 422.
            let statuses: &[&str] = if path.starts_with("/scim/") {
                &["413", "415"]
            } else {
                &["413", "415", "422"]
            };
            for status in statuses {
                expect_problem_response(operation, status, &what);
            }
        }
    }

    let mut targets = BTreeSet::new();
    references(document, &mut targets);
    for target in targets {
        let name = target.strip_prefix("#/components/schemas/");
        let name = name.unwrap_or_else(|| panic!("unexpected reference {target}"));
        assert!(
            schemas[name].is_object(),
            "{target} is referenced but not defined"
        );
    }
    app.stop().await;
}

async fn every_documented_route_is_served(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let reply = app.call("GET", "/openapi.json", None, None).await;
    reply.expect(200);
    let operations = documented_operations(&reply.body);
    assert!(operations.len() >= declared_routes().len());
    let id = Uuid::now_v7().to_string();
    for (method, path) in &operations {
        let concrete = path
            .replace("{user_id}", &id)
            .replace("{key_id}", &id)
            .replace("{tenant_id}", &id)
            .replace("{conversation_id}", &id)
            .replace("{persona_id}", &id)
            .replace("{budget_id}", &id)
            .replace("{provider_id}", &id)
            .replace("{memory_id}", &id)
            .replace("{document_id}", &id)
            .replace("{hold_id}", &id)
            .replace("{group_id}", &id)
            .replace("{session_id}", &id)
            .replace("{tenant_slug}", "no-such-org")
            .replace("{alias}", "no-such-alias")
            .replace("{name}", "no-such-role");
        assert!(!concrete.contains('{'), "unexpected parameter in {path}");
        // Without a credential or a body nothing changes, but the route answers.
        let reply = app
            .call(&method.to_uppercase(), &concrete, None, None)
            .await;
        let unrouted = matches!(reply.body["code"].as_str(), Some("route_not_found"));
        assert!(
            !unrouted && reply.status != 405,
            "{method} {path} is not served"
        );
        assert!(reply.status < 500, "{method} {path}: {}", reply.text);
    }
    app.stop().await;
}

on_both_backends!(
    request_id_is_echoed_or_generated,
    security_headers_are_on_every_response,
    health_and_readiness,
    openapi_document_describes_every_route,
    every_documented_route_is_served,
);

async fn readiness_names_the_failing_component(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    app.karen.store.close().await;
    let reply = app.call("GET", "/readyz", None, None).await;
    reply.expect(503);
    assert_eq!(reply.body["status"], "unavailable");
    let database = reply.body["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "database")
        .unwrap();
    assert_eq!(database["ok"], false);
    assert!(database["detail"].as_str().is_some_and(|d| !d.is_empty()));
    // Liveness does not depend on the stores.
    app.karen.services.health.begin_draining();
    let draining = app.call("GET", "/readyz", None, None).await;
    let server = draining.body["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "server")
        .unwrap();
    assert_eq!(server["ok"], false, "a draining server is not ready");
    app.call("GET", "/healthz", None, None).await.expect(200);
    // A request needing the store is a 503 problem with Retry-After, not a 500.
    let me = app.get("/v1/me", &acme.owner_token).await;
    me.expect_problem(503, "service_unavailable");
    assert!(me.header("retry-after").is_some());
    app.stop().await;
}

async fn shutdown_drains_in_flight_requests(backend: Backend) {
    // An expensive password hash makes a login slow enough to be in flight.
    let Some(mut app) = karen_testkit::spawn_with(backend, |c| {
        c.auth.password_hash_memory_kib = 131_072;
        c.auth.password_hash_iterations = 3;
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let client = app.http.clone();
    let url = format!("{}/v1/auth/login", app.base_url);
    let body = json!({"tenant": "acme", "email": acme.owner_email, "password": PASSWORD});
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .json(&body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    app.shutdown_gracefully().await;
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the in-flight login completed"
    );
    // The listener is closed: new requests are refused at the connection.
    assert!(
        app.http
            .get(format!("{}/healthz", app.base_url))
            .send()
            .await
            .is_err()
    );
    app.stop().await;
}

on_both_backends!(
    readiness_names_the_failing_component,
    shutdown_drains_in_flight_requests
);

async fn every_request_logs_one_structured_line(backend: Backend) {
    let captured = crate::observability::Captured::default();
    let config = karen::config::LogConfig {
        level: "info".into(),
        ..Default::default()
    };
    karen::logging::init_with_writer(&config, captured.clone());
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let login = app
        .http
        .post(format!("{}/v1/auth/login", app.base_url))
        .header("x-request-id", "login-req-1")
        .json(&json!({"tenant": "acme", "email": acme.owner_email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let me = app
        .http
        .get(format!("{}/v1/me", app.base_url))
        .bearer_auth(&acme.owner_token)
        .header("x-request-id", "me-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // Log injection (ASVS 16.4.1): a request id crafted to close the JSON
    // string and add fields, and a login whose email carries a newline and a
    // forged line, stay inside their own JSON strings.
    let forged_id = r#"inj-1","level":"ERROR","forged":"yes"#;
    let injected = app
        .http
        .post(format!("{}/v1/auth/login", app.base_url))
        .header("x-request-id", forged_id)
        .json(&json!({"tenant": "acme",
            "email": "x@acme.test\n{\"level\":\"ERROR\",\"forged\":\"yes\"}",
            "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    assert!(injected.status().is_client_error(), "{}", injected.status());
    app.stop().await;

    let text = captured.text();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    let of = |id: &str| {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    // The login request: its own message ("login succeeded") and the request line, both with its id.
    let login_lines = of("login-req-1");
    assert!(
        login_lines
            .iter()
            .any(|l| l["message"] == "login succeeded"),
        "{login_lines:?}"
    );
    let completed: Vec<&Value> = login_lines
        .iter()
        .filter(|l| l["message"] == "request completed")
        .collect();
    assert_eq!(completed.len(), 1, "exactly one request line");
    // The /v1/me request line carries every field.
    let me_lines = of("me-req-1");
    let line = me_lines
        .iter()
        .find(|l| l["message"] == "request completed")
        .expect("request line");
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].as_f64().is_some());
    assert!(line["timestamp"].is_string() && line["level"] == "INFO");
    assert_eq!(line["span"]["method"], "GET");
    assert_eq!(line["span"]["route"], "/v1/me");
    assert_eq!(line["span"]["tenant_id"], acme.id.to_string());
    assert_eq!(line["span"]["user_id"], acme.owner_id.to_string());
    // Every line above parsed as one JSON object; none gained a forged field.
    let forged = |v: &Value| v.get("forged").is_some();
    assert!(
        !lines
            .iter()
            .any(|l| forged(l) || forged(&l["span"]) || forged(&l["fields"])),
        "an injected field reached the log"
    );
    // No credential or password ever reaches the log.
    for secret in [
        PASSWORD,
        acme.owner_token.as_str(),
        acme.owner_refresh.as_str(),
        "krn_op_",
        "krr_",
        "$argon2",
    ] {
        assert!(!text.contains(secret), "a secret reached the log: {secret}");
    }
}

on_both_backends!(every_request_logs_one_structured_line);
