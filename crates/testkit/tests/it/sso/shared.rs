//! What the OIDC and the SAML tests share: a browser without redirects, the
//! checks of a refused or successful login, and the scenarios every
//! protocol's connection must pass alike (RBAC, "SSO required", unknown
//! organisations).

use std::time::Duration;

use karen_domain::BuiltinRole;
use karen_testkit::{PASSWORD, Reply, TestApp, TestTenant};
use serde_json::{Value, json};

/// A browser that does not follow redirects (the tests look at each hop).
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `GET url` as a browser, without a credential.
pub(crate) async fn get(url: &str) -> Reply {
    Reply::read_response(browser().get(url).send().await.unwrap()).await
}

/// `GET url` as a browser: where the 302 it answers sends the browser.
pub(crate) async fn redirected_to(url: &str) -> String {
    let reply = get(url).await;
    reply.expect(302);
    reply.header("location").unwrap().to_owned()
}

/// A login refused for `reason`, without tokens.
#[track_caller]
pub(crate) fn expect_refused(reply: &Reply, reason: &str) {
    reply.expect_problem(401, "sso_failed");
    assert!(
        reply.str("detail").contains(&format!("({reason})")),
        "expected {reason}: {}",
        reply.text
    );
    assert!(reply.body.get("access_token").is_none(), "{}", reply.text);
}

/// The user a successful login signed in: `/v1/me` answers for its access
/// token with `email` and `roles`, and its refresh token works like a
/// password login's. Returns the user's id.
pub(crate) async fn expect_signed_in(
    app: &TestApp,
    login: &Reply,
    email: &str,
    roles: Value,
) -> String {
    login.expect(200);
    let me = app.get("/v1/me", login.str("access_token")).await;
    me.expect(200);
    assert_eq!(me.str("email"), email);
    assert_eq!(me.body["roles"], roles);
    let refresh = json!({"refresh_token": login.str("refresh_token")});
    app.call("POST", "/v1/auth/refresh", None, Some(refresh))
        .await
        .expect(200);
    me.str("user_id").to_owned()
}

/// The tenant settings body that turns "SSO required" on or off.
fn sso_required_settings(required: bool) -> Value {
    json!({"settings": {"default_role": "member",
        "allowed_email_domains": [], "sso_required": required}})
}

/// Every protocol's part of "SSO required", at an organisation with a
/// member `member@acme.test`: not before a connection (`body` at
/// `connection`) exists; then the member's password is refused while the
/// owner's works and `login` (an SSO login) succeeds; the connection can
/// neither go nor be switched off while required; once no longer required,
/// the member's password works again, the connection can go, and `start`
/// (a login start path) answers 404.
pub(crate) async fn required_sso_scenario(
    app: &TestApp,
    acme: &TestTenant,
    connection: &str,
    body: Value,
    login: impl AsyncFn() -> Reply,
    start: &str,
) {
    app.patch("/v1/tenant", &acme.owner_token, sso_required_settings(true))
        .await
        .expect_problem(422, "validation_failed");
    app.put(connection, &acme.owner_token, body.clone())
        .await
        .expect(200);
    let tenant = app
        .patch("/v1/tenant", &acme.owner_token, sso_required_settings(true))
        .await;
    assert_eq!(tenant.expect(200).body["settings"]["sso_required"], true);

    app.login("acme", "member@acme.test", PASSWORD)
        .await
        .expect_problem(403, "sso_required");
    // Owners keep the password as the way back in; SSO works.
    app.login("acme", &acme.owner_email, PASSWORD)
        .await
        .expect(200);
    login().await.expect(200);
    // The connection cannot go while it is required.
    app.delete(connection, &acme.owner_token)
        .await
        .expect_problem(409, "conflict");
    let mut disabled = body;
    disabled["enabled"] = json!(false);
    app.put(connection, &acme.owner_token, disabled)
        .await
        .expect_problem(409, "conflict");
    app.patch(
        "/v1/tenant",
        &acme.owner_token,
        sso_required_settings(false),
    )
    .await
    .expect(200);
    app.login("acme", "member@acme.test", PASSWORD)
        .await
        .expect(200);
    app.delete(connection, &acme.owner_token).await.expect(204);
    app.get(connection, &acme.owner_token)
        .await
        .expect_problem(404, "not_found");
    get(&format!("{}{start}?tenant=acme", app.base_url))
        .await
        .expect_problem(404, "not_found");
}

/// Only roles with `tenant:manage` read, put (`body()`) and delete the
/// connection at `connection`; the others get 403.
pub(crate) async fn only_tenant_managers_may_configure(
    app: &TestApp,
    acme: &TestTenant,
    connection: &str,
    body: impl Fn() -> Value,
) {
    for role in BuiltinRole::ALL {
        let email = format!("rbac-{}@acme.test", role.name().replace('_', "-"));
        let (_, token) = app.create_user(acme, &email, &[role.name()]).await;
        let allowed = role
            .permissions()
            .contains(karen_domain::Permission::TenantManage);
        let replies = [
            app.get(connection, &token).await,
            app.put(connection, &token, body()).await,
        ];
        for reply in replies {
            if allowed {
                reply.expect(200);
            } else {
                reply.expect_problem(403, "permission_denied");
            }
        }
        if !allowed {
            app.delete(connection, &token)
                .await
                .expect_problem(403, "permission_denied");
        }
    }
}

/// At `start` (a login start path), an organisation without the connection
/// and one that does not exist answer the same 404.
pub(crate) async fn unknown_and_unconfigured_organisations_look_alike(app: &TestApp, start: &str) {
    app.create_tenant("plain").await;
    let plain = get(&format!("{}{start}?tenant=plain", app.base_url)).await;
    let nowhere = get(&format!("{}{start}?tenant=nowhere", app.base_url)).await;
    plain.expect_problem(404, "not_found");
    nowhere.expect_problem(404, "not_found");
    assert_eq!(plain.body["detail"], nowhere.body["detail"]);
}

/// Each of `expected` (action, outcome) is in the audit `trail`.
#[track_caller]
pub(crate) fn expect_audited(trail: &Reply, expected: &[(&str, &str)]) {
    let events = audit_actions(trail);
    for (action, outcome) in expected {
        assert!(
            events.iter().any(|(a, o, _)| a == action && o == outcome),
            "{action} {outcome} in {events:?}"
        );
    }
}

pub(crate) fn audit_actions(trail: &Reply) -> Vec<(String, String, String)> {
    trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["outcome"].as_str().unwrap_or_default().to_owned(),
                e["diff"].to_string(),
            )
        })
        .collect()
}
