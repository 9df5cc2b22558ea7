//! HTTP conventions and bad input: every client mistake is a 4xx problem
//! document (never a 500) carrying the request id; nothing is half-written by a
//! rejected request; every response carries the security headers; the health
//! endpoints and the OpenAPI document describe the server truthfully.

mod bad_input;
mod conventions;
mod hardening;

use karen_testkit::{Reply, TestApp};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::Value;

/// Sends a request the test built itself (raw body, odd headers).
pub(super) async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request reaches the server");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        body,
    }
}

/// A GET with one extra header.
pub(super) async fn get_with(
    app: &TestApp,
    path: &str,
    name: &str,
    value: impl Into<HeaderValue>,
) -> Reply {
    let value: HeaderValue = value.into();
    send(
        app.http
            .get(format!("{}{path}", app.base_url))
            .header(name, value),
    )
    .await
}

/// A POST of `body` as-is, with `content_type` if given.
pub(super) async fn post_raw(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut request = app.http.post(format!("{}{path}", app.base_url)).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    send(request).await
}

/// A problem with `status` and `code` whose `request_id` is the response's
/// `x-request-id`, carrying the security headers.
#[track_caller]
pub(super) fn expect_problem(reply: &Reply, status: u16, code: &str) {
    reply.expect_problem(status, code);
    let header = reply.header("x-request-id").unwrap_or_default();
    assert!(
        !header.is_empty(),
        "x-request-id header; body: {}",
        reply.text
    );
    assert_eq!(
        reply.body["request_id"], header,
        "request_id; body: {}",
        reply.text
    );
    assert_eq!(
        reply.body["type"],
        format!("urn:karen:problem:{code}"),
        "{}",
        reply.text
    );
    assert!(
        reply.body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{}",
        reply.text
    );
    expect_security_headers(reply);
}

/// A 422 `validation_failed` whose `field` is `field`, not echoing long input back.
#[track_caller]
pub(super) fn expect_invalid_field(reply: &Reply, field: &str) {
    expect_problem(reply, 422, "validation_failed");
    assert_eq!(
        reply.body["field"], field,
        "problem names the field; body: {}",
        reply.text
    );
    let excerpt: String = reply.text.chars().take(300).collect();
    assert!(
        reply.text.len() < 2_000,
        "long input echoed back: {excerpt}…"
    );
}

/// As [`expect_invalid_field`], with the detail naming the field and its limit.
#[track_caller]
pub(super) fn expect_too_long(reply: &Reply, field: &str) {
    expect_invalid_field(reply, field);
    let detail = reply.str("detail");
    assert!(
        detail.contains(field) && detail.contains("at most"),
        "detail: {detail}"
    );
}

#[track_caller]
pub(super) fn expect_security_headers(reply: &Reply) {
    let status = reply.status;
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "status {status}"
    );
    assert_eq!(
        reply.header("x-frame-options"),
        Some("DENY"),
        "status {status}"
    );
    assert_eq!(
        reply.header("cache-control"),
        Some("no-store"),
        "status {status}"
    );
    let csp = reply.header("content-security-policy").unwrap_or_default();
    assert!(!csp.is_empty(), "content-security-policy; status {status}");
}

#[track_caller]
pub(super) fn expect_bearer_challenge(reply: &Reply) {
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate: '{challenge}'"
    );
}

/// The user ids of the tenant, as its owner sees them.
pub(super) async fn user_ids(app: &TestApp, token: &str) -> Vec<String> {
    let reply = app.get("/v1/users?limit=200", token).await;
    reply.expect(200);
    reply.item_ids()
}

/// The tenant ids of the platform, as the operator sees them.
pub(super) async fn tenant_ids(app: &TestApp) -> Vec<String> {
    let reply = app
        .get("/v1/platform/tenants?limit=200", &app.operator_key)
        .await;
    reply.expect(200);
    reply.item_ids()
}
