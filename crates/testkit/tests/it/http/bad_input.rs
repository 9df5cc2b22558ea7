//! Bad input: each client mistake is a 4xx problem and writes nothing.

use karen_testkit::{Backend, PASSWORD};
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;

async fn malformed_json_is_a_400(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let token = Some(tenant.owner_token.as_str());
    let json = Some("application/json");
    for body in [
        r#"{"email": "#,
        "{not json}",
        r#"{"email": "x@acme.test",}"#,
        "",
    ] {
        let reply = post_raw(&app, "/v1/auth/login", None, json, body).await;
        expect_problem(&reply, 400, "malformed_json");
        let reply = post_raw(&app, "/v1/users", token, json, body).await;
        expect_problem(&reply, 400, "malformed_json");
    }
    // A complete, valid object followed by more text is still not JSON.
    let before = user_ids(&app, &tenant.owner_token).await;
    let body = format!(r#"{{"email": "x@acme.test", "password": "{PASSWORD}"}} trailing"#);
    let reply = post_raw(&app, "/v1/users", token, json, body).await;
    expect_problem(&reply, 400, "malformed_json");
    assert_eq!(user_ids(&app, &tenant.owner_token).await, before);
    app.stop().await;
}

async fn unknown_field_is_a_422_naming_it(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let before = user_ids(&app, &tenant.owner_token).await;
    let body = json!({"email": "new@acme.test", "password": PASSWORD, "nickname": "newbie"});
    let reply = app.post("/v1/users", &tenant.owner_token, body).await;
    expect_problem(&reply, 422, "validation_failed");
    assert!(
        reply.str("detail").contains("nickname"),
        "names the field: {}",
        reply.text
    );
    assert_eq!(user_ids(&app, &tenant.owner_token).await, before);

    let body = json!({"tenant": "acme", "email": tenant.owner_email, "password": PASSWORD,
        "remember_me": true});
    let reply = app.call("POST", "/v1/auth/login", None, Some(body)).await;
    expect_problem(&reply, 422, "validation_failed");
    assert!(
        reply.str("detail").contains("remember_me"),
        "names the field: {}",
        reply.text
    );
    app.stop().await;
}

async fn wrong_json_type_is_a_422(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let login = json!({"tenant": 5, "email": tenant.owner_email, "password": PASSWORD});
    let reply = app.call("POST", "/v1/auth/login", None, Some(login)).await;
    expect_problem(&reply, 422, "validation_failed");
    for body in [
        json!({"email": "new@acme.test", "roles": "admin"}),
        json!({"email": "new@acme.test", "password": 123_456_789_012_345_u64}),
        json!("new@acme.test"),
        json!({"email": null}),
    ] {
        let reply = app.post("/v1/users", &tenant.owner_token, body).await;
        expect_problem(&reply, 422, "validation_failed");
    }
    app.stop().await;
}

async fn body_without_json_content_type_is_a_415(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let token = Some(tenant.owner_token.as_str());
    let login = json!({"tenant": "acme", "email": tenant.owner_email, "password": PASSWORD});
    let user = json!({"email": "new@acme.test"}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let reply = post_raw(
            &app,
            "/v1/auth/login",
            None,
            content_type,
            login.to_string(),
        )
        .await;
        expect_problem(&reply, 415, "unsupported_media_type");
        let reply = post_raw(&app, "/v1/users", token, content_type, user.clone()).await;
        expect_problem(&reply, 415, "unsupported_media_type");
    }
    // The same body with the right content type is accepted.
    let json = Some("application/json");
    post_raw(&app, "/v1/auth/login", None, json, login.to_string())
        .await
        .expect(200);
    app.stop().await;
}

async fn body_over_the_limit_is_a_413(backend: Backend) {
    let limited = karen_testkit::spawn_with(backend, |c| c.server.body_limit_bytes = 4096);
    let Some(app) = limited.await else { return };
    let tenant = app.create_tenant("acme").await;
    let before = user_ids(&app, &tenant.owner_token).await;
    let padding = "x".repeat(10 * 1024);
    let login = json!({"tenant": "acme", "email": tenant.owner_email, "password": padding});
    let reply = app.call("POST", "/v1/auth/login", None, Some(login)).await;
    expect_problem(&reply, 413, "payload_too_large");
    let user = json!({"email": "big@acme.test", "password": PASSWORD, "display_name": padding});
    let reply = app.post("/v1/users", &tenant.owner_token, user).await;
    expect_problem(&reply, 413, "payload_too_large");
    assert_eq!(user_ids(&app, &tenant.owner_token).await, before);
    // Under the limit, the same route works.
    let user = json!({"email": "small@acme.test", "password": PASSWORD});
    app.post("/v1/users", &tenant.owner_token, user)
        .await
        .expect(201);
    app.stop().await;
}

async fn invalid_uuid_in_path_is_a_400(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let token = tenant.owner_token.as_str();
    for (method, path, body) in [
        ("GET", "/v1/users/not-a-uuid", None),
        (
            "PATCH",
            "/v1/users/not-a-uuid",
            Some(json!({"display_name": "X"})),
        ),
        (
            "PUT",
            "/v1/users/12345/roles",
            Some(json!({"roles": ["member"]})),
        ),
        ("POST", "/v1/users/not-a-uuid/disable", None),
        ("GET", "/v1/api-keys/not-a-uuid", None),
        ("DELETE", "/v1/api-keys/not-a-uuid", None),
    ] {
        let reply = app.call(method, path, Some(token), body).await;
        expect_problem(&reply, 400, "bad_request");
        assert!(
            reply.str("detail").contains("UUID"),
            "says what is expected: {}",
            reply.text
        );
    }
    let reply = app
        .get("/v1/platform/tenants/not-a-uuid", &app.operator_key)
        .await;
    expect_problem(&reply, 400, "bad_request");
    // A well-formed id that does not exist is a 404, not a 400.
    let reply = app
        .get(&format!("/v1/users/{}", Uuid::now_v7()), token)
        .await;
    expect_problem(&reply, 404, "not_found");
    app.stop().await;
}

async fn invalid_query_parameters_are_rejected(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let token = tenant.owner_token.as_str();
    for query in ["limit=abc", "limit=-1", "bogus=1", "limit=99999999999"] {
        let reply = app.get(&format!("/v1/users?{query}"), token).await;
        expect_problem(&reply, 400, "bad_request");
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("after=nope", "after"),
    ] {
        let reply = app.get(&format!("/v1/users?{query}"), token).await;
        expect_invalid_field(&reply, field);
    }
    app.get("/v1/users?limit=200", token).await.expect(200);
    app.stop().await;
}

async fn unknown_route_is_a_404(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    for path in [
        "/v1/nope",
        "/",
        "/v2/users",
        "/v1/users/extra/segments/here",
    ] {
        expect_problem(
            &app.call("GET", path, None, None).await,
            404,
            "route_not_found",
        );
        expect_problem(
            &app.get(path, &tenant.owner_token).await,
            404,
            "route_not_found",
        );
    }
    let reply = app.call("POST", "/v1/nope", None, Some(json!({}))).await;
    expect_problem(&reply, 404, "route_not_found");
    app.stop().await;
}

async fn wrong_method_is_a_405(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    for (method, path, allowed) in [
        ("DELETE", "/v1/me", "GET"),
        ("GET", "/v1/auth/login", "POST"),
        ("PUT", "/v1/users", "GET,POST"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/v1/tenant", "GET,PATCH"),
        ("POST", "/openapi.json", "GET"),
    ] {
        for token in [None, Some(tenant.owner_token.as_str())] {
            let reply = app.call(method, path, token, None).await;
            expect_problem(&reply, 405, "method_not_allowed");
            // RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
            let allow = reply.header("allow").unwrap_or_default().to_uppercase();
            for expected in allowed.split(',') {
                assert!(
                    allow.contains(expected),
                    "{method} {path}: Allow: '{allow}'"
                );
            }
        }
    }
    app.stop().await;
}

async fn overlong_strings_are_422_naming_the_field(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let token = tenant.owner_token.as_str();
    let long_name = "n".repeat(10_000);
    let long_email = format!("{}@acme.test", "a".repeat(290));
    assert_eq!(long_email.len(), 300);

    let users_before = user_ids(&app, token).await;
    let body = json!({"email": "long@acme.test", "password": PASSWORD, "display_name": long_name});
    expect_too_long(&app.post("/v1/users", token, body).await, "display_name");
    let body = json!({"email": long_email, "password": PASSWORD});
    expect_too_long(&app.post("/v1/users", token, body).await, "email");
    assert_eq!(user_ids(&app, token).await, users_before);

    let (user_id, _) = app
        .create_user(&tenant, "someone@acme.test", &["member"])
        .await;
    let path = format!("/v1/users/{user_id}");
    let body = json!({"display_name": long_name});
    expect_too_long(&app.patch(&path, token, body).await, "display_name");
    expect_too_long(
        &app.patch(&path, token, json!({"email": long_email})).await,
        "email",
    );
    let user = app.get(&path, token).await;
    user.expect(200);
    assert_eq!(user.body["email"], "someone@acme.test");
    assert_eq!(user.body["display_name"], Value::Null);

    let tenants_before = tenant_ids(&app).await;
    let tenant_body = |slug: &str, name: &str, email: &str| json!({"slug": slug, "name": name, "owner_email": email, "owner_password": PASSWORD});
    let operator = app.operator_key.as_str();
    let body = tenant_body(&"s".repeat(100), "Long Inc.", "o@long.test");
    expect_too_long(
        &app.post("/v1/platform/tenants", operator, body).await,
        "slug",
    );
    let body = tenant_body("longname", &long_name, "o@long.test");
    expect_too_long(
        &app.post("/v1/platform/tenants", operator, body).await,
        "name",
    );
    let body = tenant_body("longemail", "Long Inc.", &long_email);
    let reply = app.post("/v1/platform/tenants", operator, body).await;
    // The value type reports `email`; the request field is `owner_email`.
    expect_problem(&reply, 422, "validation_failed");
    let field = reply.body["field"].as_str().unwrap_or_default();
    assert!(
        ["email", "owner_email"].contains(&field),
        "names the field: {}",
        reply.text
    );
    assert_eq!(tenant_ids(&app).await, tenants_before);
    app.stop().await;
}

async fn non_ascii_authorization_is_a_400(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    app.create_tenant("acme").await;
    for bytes in [
        &b"Bearer \xff\xfe"[..],
        b"Bearer krn_\xc3\xa9t\xc3\xa9",
        b"\xff\xfe",
    ] {
        let value = HeaderValue::from_bytes(bytes).expect("obs-text is a valid header value");
        for path in ["/v1/me", "/v1/users", "/v1/platform/tenants"] {
            let reply = get_with(&app, path, "authorization", value.clone()).await;
            assert!(reply.status < 500, "{path}: never a 5xx: {}", reply.text);
            expect_problem(&reply, 400, "bad_request");
        }
    }
    app.stop().await;
}

async fn missing_or_unusable_authorization_is_a_401(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    for path in ["/v1/me", "/v1/users", "/v1/platform/tenants", "/v1/tenant"] {
        let reply = app.call("GET", path, None, None).await;
        expect_problem(&reply, 401, "unauthenticated");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{path}");
        for value in [
            format!("Basic {}", tenant.owner_token),
            "Bearer".to_owned(),
            "Bearer    ".to_owned(),
            tenant.owner_token.clone(),
        ] {
            let value = HeaderValue::from_str(&value).expect("header value");
            let reply = get_with(&app, path, "authorization", value).await;
            expect_problem(&reply, 401, "unauthenticated");
            expect_bearer_challenge(&reply);
        }
    }
    // A garbage bearer credential is an invalid token, also with a challenge.
    let reply = app.get("/v1/me", "not-a-token").await;
    expect_problem(&reply, 401, "invalid_token");
    expect_bearer_challenge(&reply);
    // The scheme is case-insensitive.
    let value = HeaderValue::from_str(&format!("bearer {}", tenant.owner_token)).unwrap();
    get_with(&app, "/v1/me", "authorization", value)
        .await
        .expect(200);
    app.stop().await;
}

async fn rejected_user_creation_writes_nothing(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let tenant = app.create_tenant("acme").await;
    let token = tenant.owner_token.as_str();
    app.create_user(&tenant, "taken@acme.test", &["member"])
        .await;
    let before = user_ids(&app, token).await;

    let roles = ["member", "no-such-role"];
    let body = json!({"email": "new@acme.test", "password": PASSWORD, "roles": roles});
    let reply = app.post("/v1/users", token, body).await;
    expect_invalid_field(&reply, "roles");
    assert!(
        reply.str("detail").contains("no-such-role"),
        "{}",
        reply.text
    );
    assert_eq!(user_ids(&app, token).await, before);

    for email in ["taken@acme.test", "TAKEN@acme.test"] {
        let body = json!({"email": email, "password": PASSWORD, "roles": ["admin"]});
        expect_problem(&app.post("/v1/users", token, body).await, 409, "conflict");
        assert_eq!(user_ids(&app, token).await, before);
    }
    let body = json!({"email": "short@acme.test", "password": "short"});
    expect_problem(
        &app.post("/v1/users", token, body).await,
        422,
        "validation_failed",
    );
    assert_eq!(user_ids(&app, token).await, before);

    // None of the rejected users can log in.
    for email in ["new@acme.test", "short@acme.test"] {
        let reply = app.login("acme", email, PASSWORD).await;
        expect_problem(&reply, 401, "invalid_credentials");
    }
    app.stop().await;
}

async fn rejected_tenant_creation_writes_nothing(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    app.create_tenant("acme").await;
    let before = tenant_ids(&app).await;
    let operator = app.operator_key.as_str();
    let body = json!({"slug": "acme", "name": "Again", "owner_email": "other@acme.test",
        "owner_password": PASSWORD});
    expect_problem(
        &app.post("/v1/platform/tenants", operator, body).await,
        409,
        "conflict",
    );
    assert_eq!(tenant_ids(&app).await, before);
    let body = json!({"slug": "fresh", "name": "Fresh", "owner_email": "o@fresh.test",
        "owner_password": "short"});
    let reply = app.post("/v1/platform/tenants", operator, body).await;
    expect_problem(&reply, 422, "validation_failed");
    assert_eq!(tenant_ids(&app).await, before);
    // The existing tenant is untouched by the rejected duplicate.
    let reply = app.login("acme", "other@acme.test", PASSWORD).await;
    expect_problem(&reply, 401, "invalid_credentials");
    app.token("acme", "owner@acme.test", PASSWORD).await;
    app.stop().await;
}

on_both_backends!(
    malformed_json_is_a_400,
    unknown_field_is_a_422_naming_it,
    wrong_json_type_is_a_422,
    body_without_json_content_type_is_a_415,
    body_over_the_limit_is_a_413,
    invalid_uuid_in_path_is_a_400,
    invalid_query_parameters_are_rejected,
    unknown_route_is_a_404,
    wrong_method_is_a_405,
    overlong_strings_are_422_naming_the_field,
    non_ascii_authorization_is_a_400,
    missing_or_unusable_authorization_is_a_401,
    rejected_user_creation_writes_nothing,
    rejected_tenant_creation_writes_nothing,
);
