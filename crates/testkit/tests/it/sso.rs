//! Single sign-on with OpenID Connect against the test provider of the
//! testkit (real RS256 and ES256 ID tokens): just-in-time accounts matched by
//! subject, roles from the groups claim, every bad ID token refused, state
//! and PKCE bound to one login, the issuer's SSRF policy and redirects, the
//! tenant's "SSO required" policy, RBAC of the admin routes and the audit
//! trail.

use std::time::Duration;

use karen_testkit::oidc_provider::{
    OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, SigningAlg, Tamper, TestIdentity, TestOidcProvider,
};
use karen_testkit::{Backend, PASSWORD, Reply, TestApp, TestTenant, spawn_with};
use serde_json::{Value, json};

use shared::{
    audit_actions, expect_audited, expect_refused, expect_signed_in, get,
    only_tenant_managers_may_configure, redirected_to, required_sso_scenario,
    unknown_and_unconfigured_organisations_look_alike,
};

pub(crate) mod shared;

const CONNECTION: &str = "/v1/tenant/sso/oidc";

/// A server whose SSO may reach the loopback provider (as the fake LLM
/// upstream is allowlisted for the model providers).
async fn setup(backend: Backend) -> Option<(TestApp, TestOidcProvider, TestTenant)> {
    let app = spawn_with(backend, |c| {
        c.sso.allow_private_addresses = vec!["127.0.0.1".into()];
    })
    .await?;
    let provider = TestOidcProvider::start(app.clock.clone()).await;
    let acme = app.create_tenant("acme").await;
    app.put(
        CONNECTION,
        &acme.owner_token,
        connection_body(&provider.issuer),
    )
    .await
    .expect(200);
    Some((app, provider, acme))
}

fn connection_body(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "client_id": OIDC_CLIENT_ID,
        "client_secret": OIDC_CLIENT_SECRET,
        "scopes": ["email", "profile", "groups"],
        "role_mapping": {"claim": "groups",
            "values": {"engineering": "member", "it-admins": "admin"}, "default_role": null},
    })
}

/// `GET /v1/auth/sso/oidc/start` → the provider's authorization URL.
async fn start(app: &TestApp, slug: &str) -> String {
    redirected_to(&format!(
        "{}/v1/auth/sso/oidc/start?tenant={slug}",
        app.base_url
    ))
    .await
}

/// The provider approves at once: → Karen's callback URL with code and state.
async fn approve(authorize_url: &str) -> String {
    redirected_to(authorize_url).await
}

/// A whole browser round trip; the callback's reply.
async fn sso_login(app: &TestApp, slug: &str) -> Reply {
    let callback = approve(&start(app, slug).await).await;
    get(&callback).await
}

fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

async fn first_login_creates_the_user_and_later_ones_match_by_subject(backend: Backend) {
    let Some((app, provider, acme)) = setup(backend).await else {
        return;
    };
    let shown = app.get(CONNECTION, &acme.owner_token).await;
    shown.expect(200);
    assert_eq!(shown.body["client_secret_set"], true);
    assert!(
        !shown.text.contains(OIDC_CLIENT_SECRET),
        "the secret is write-only"
    );
    assert_eq!(
        shown.body["role_mapping"]["values"]["engineering"],
        "member"
    );

    // First login (RS256): the account is made with the mapped role; its
    // refresh token works like a password login's.
    let first = sso_login(&app, "acme").await;
    let user_id = expect_signed_in(&app, &first, "user1@idp.test", json!(["member"])).await;

    // Later login (ES256), new groups and another email at the provider:
    // the same account (matched by subject), roles brought in step.
    provider.sign_with(SigningAlg::Es256);
    let mut identity =
        TestIdentity::new("user-1", "renamed@idp.test", &["engineering", "it-admins"]);
    identity.name = Some("Renamed".into());
    provider.sign_in_as(identity);
    let second = sso_login(&app, "acme").await;
    second.expect(200);
    let me = app.get("/v1/me", second.str("access_token")).await;
    assert_eq!(me.str("user_id"), user_id);
    assert_eq!(me.str("email"), "user1@idp.test");
    assert_eq!(me.body["roles"], json!(["admin", "member"]));

    // The user's data export names the linked identity.
    let export = app
        .get(&format!("/v1/users/{user_id}/export"), &acme.owner_token)
        .await;
    assert_eq!(
        export.expect(200).body["sso_identities"][0]["subject"],
        "user-1"
    );
    // An SSO account has no password.
    app.login("acme", "user1@idp.test", PASSWORD)
        .await
        .expect_problem(401, "invalid_credentials");

    // Another subject claiming an existing account's email is not let in.
    provider.sign_in_as(TestIdentity::new(
        "intruder",
        &acme.owner_email,
        &["engineering"],
    ));
    expect_refused(&sso_login(&app, "acme").await, "email_in_use");
    // Groups that map to nothing, without a default role.
    provider.sign_in_as(TestIdentity::new(
        "user-2",
        "user2@idp.test",
        &["marketing"],
    ));
    expect_refused(&sso_login(&app, "acme").await, "no_role");
    // An unverified email cannot make an account.
    let mut unverified = TestIdentity::new("user-3", "user3@idp.test", &["engineering"]);
    unverified.email_verified = false;
    provider.sign_in_as(unverified);
    expect_refused(&sso_login(&app, "acme").await, "email");

    // A disabled user cannot sign in through the provider either.
    provider.sign_in_as(TestIdentity::new(
        "user-1",
        "user1@idp.test",
        &["engineering"],
    ));
    app.post(
        &format!("/v1/users/{user_id}/disable"),
        &acme.owner_token,
        json!({}),
    )
    .await
    .expect(200);
    sso_login(&app, "acme")
        .await
        .expect_problem(403, "user_disabled");

    // The audit trail tells the story, without the client secret.
    let trail = app.get("/v1/audit?limit=200", &acme.owner_token).await;
    trail.expect(200);
    assert!(!trail.text.contains(OIDC_CLIENT_SECRET));
    expect_audited(
        &trail,
        &[
            ("sso.connection.create", "success"),
            ("auth.sso.start", "success"),
            ("auth.sso.login", "success"),
            ("auth.login", "success"),
            ("user.create", "success"),
            ("user.roles.sync", "success"),
            ("auth.sso.login.failed", "failure"),
            ("auth.sso.login.failed", "denied"),
        ],
    );
    assert!(
        audit_actions(&trail)
            .iter()
            .any(|(a, _, diff)| a == "auth.sso.login.failed" && diff.contains("no_role"))
    );
    app.stop().await;
}

async fn every_bad_id_token_is_refused(backend: Backend) {
    let Some((app, provider, _)) = setup(backend).await else {
        return;
    };
    for (tamper, reason) in [
        (Tamper::OtherKey, "signature"),
        (Tamper::Issuer("https://evil.example.com".into()), "issuer"),
        (Tamper::Audience("another-client".into()), "audience"),
        (Tamper::Expired(Duration::from_secs(3600)), "expired"),
        (Tamper::WrongNonce, "nonce"),
        (Tamper::MissingNonce, "nonce"),
        (Tamper::AlgNone, "algorithm"),
        (Tamper::Hs256, "algorithm"),
    ] {
        provider.tamper(tamper.clone());
        let reply = sso_login(&app, "acme").await;
        expect_refused(&reply, reason);
        assert!(reply.body.get("access_token").is_none(), "{tamper:?}");
    }
    // The same provider, untampered, signs in (RS256 and ES256).
    provider.tamper(Tamper::None);
    sso_login(&app, "acme").await.expect(200);
    provider.sign_with(SigningAlg::Es256);
    sso_login(&app, "acme").await.expect(200);
    app.stop().await;
}

async fn state_and_pkce_bind_the_code_to_one_login(backend: Backend) {
    let Some((app, provider, acme)) = setup(backend).await else {
        return;
    };
    // Unknown, malformed and forged states.
    let callback = approve(&start(&app, "acme").await).await;
    for bad in ["nonsense", "krs_AAAA", &format!("krs_{}", "A".repeat(86))] {
        expect_refused(&get(&with_param(&callback, "state", bad)).await, "state");
    }
    // A state is no credential anywhere else.
    let state = query_param(&callback, "state");
    assert!(state.starts_with("krs_"));
    app.get("/v1/me", &state)
        .await
        .expect_problem(401, "invalid_token");
    let refresh = json!({"refresh_token": state});
    app.call("POST", "/v1/auth/refresh", None, Some(refresh))
        .await
        .expect_problem(401, "invalid_token");
    // The genuine state works once; replaying it is refused.
    get(&callback).await.expect(200);
    expect_refused(&get(&callback).await, "state");

    // Code injection: a code obtained for one login, presented with the state
    // of another, carries the wrong PKCE challenge for that login's verifier.
    let first = approve(&start(&app, "acme").await).await;
    let second = approve(&start(&app, "acme").await).await;
    let exchanges = provider.token_requests();
    let injected = with_param(&second, "code", &query_param(&first, "code"));
    expect_refused(&get(&injected).await, "code_exchange");
    assert_eq!(
        provider.token_requests(),
        exchanges + 1,
        "the provider refused the verifier"
    );
    // …and the second login's state is spent by that attempt.
    expect_refused(&get(&second).await, "state");

    // A state past its lifetime.
    let late = approve(&start(&app, "acme").await).await;
    app.clock.advance(Duration::from_secs(11 * 60));
    expect_refused(&get(&late).await, "state");

    // The provider reporting an error instead of a code.
    let refused = approve(&start(&app, "acme").await).await;
    let url = format!(
        "{}/v1/auth/sso/oidc/callback?state={}&error=access_denied",
        app.base_url,
        query_param(&refused, "state")
    );
    expect_refused(&get(&url).await, "provider_error");

    // Bad input is a 4xx problem, never a 500.
    get(&format!("{}/v1/auth/sso/oidc/callback", app.base_url))
        .await
        .expect_problem(400, "bad_request");
    get(&format!("{}/v1/auth/sso/oidc/start", app.base_url))
        .await
        .expect_problem(400, "bad_request");
    // An organisation without SSO and one that does not exist look the same.
    unknown_and_unconfigured_organisations_look_alike(&app, "/v1/auth/sso/oidc/start").await;
    let trail = app.get("/v1/audit?limit=200", &acme.owner_token).await;
    assert!(trail.expect(200).text.contains("code_exchange"));
    app.stop().await;
}

/// The provider failing the code exchange is the gateway's problem (502),
/// not a refusal of the user, and the failed login is in the audit trail.
async fn a_provider_outage_is_a_502_and_recorded(backend: Backend) {
    let Some((app, provider, acme)) = setup(backend).await else {
        return;
    };
    let callback = approve(&start(&app, "acme").await).await;
    provider.token_outage(true);
    let failed = get(&callback).await;
    failed.expect_problem(502, "upstream_error");
    assert!(failed.body.get("access_token").is_none(), "{}", failed.text);
    let trail = app
        .get("/v1/audit?action=auth.sso.login.failed", &acme.owner_token)
        .await;
    let trail = trail.expect(200);
    let failure = &trail.body["items"][0];
    assert_eq!(failure["outcome"], "failure");
    assert_eq!(failure["diff"]["after"]["reason"], "provider_unavailable");
    // Once the provider is back, a new login goes through.
    provider.token_outage(false);
    sso_login(&app, "acme").await.expect(200);
    app.stop().await;
}

async fn issuers_follow_the_outbound_policy_and_no_redirects(backend: Backend) {
    // Without an allowlist entry a loopback issuer is refused.
    let Some(app) = spawn_with(backend, |_| {}).await else {
        return;
    };
    let provider = TestOidcProvider::start(app.clock.clone()).await;
    let acme = app.create_tenant("acme").await;
    let reply = app
        .put(
            CONNECTION,
            &acme.owner_token,
            connection_body(&provider.issuer),
        )
        .await;
    reply.expect_problem(422, "validation_failed");
    assert_eq!(reply.str("field"), "issuer");
    assert!(reply.str("detail").contains("allowlist"), "{}", reply.text);
    for issuer in [
        "http://idp.example.com",
        "ftp://idp.example.com",
        "https://169.254.169.254",
    ] {
        let reply = app
            .put(CONNECTION, &acme.owner_token, connection_body(issuer))
            .await;
        reply.expect_problem(422, "validation_failed");
    }
    app.get(CONNECTION, &acme.owner_token)
        .await
        .expect_problem(404, "not_found");
    app.stop().await;

    // Allowlisted, but the discovery document redirects: refused, not followed.
    let Some((app, provider, acme)) = setup(backend).await else {
        return;
    };
    let redirecting = format!("{}/redirecting", provider.issuer);
    let reply = app
        .put(CONNECTION, &acme.owner_token, connection_body(&redirecting))
        .await;
    reply.expect_problem(422, "validation_failed");
    assert!(reply.str("detail").contains("redirect"), "{}", reply.text);
    // The stored connection is unchanged.
    let shown = app.get(CONNECTION, &acme.owner_token).await;
    assert_eq!(shown.expect(200).str("issuer"), provider.issuer);
    app.stop().await;
}

async fn required_sso_refuses_password_logins_of_non_owners(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        c.sso.allow_private_addresses = vec!["127.0.0.1".into()];
    })
    .await
    else {
        return;
    };
    let provider = TestOidcProvider::start(app.clock.clone()).await;
    let acme = app.create_tenant("acme").await;
    app.create_user(&acme, "member@acme.test", &["member"])
        .await;
    required_sso_scenario(
        &app,
        &acme,
        CONNECTION,
        connection_body(&provider.issuer),
        async || sso_login(&app, "acme").await,
        "/v1/auth/sso/oidc/start",
    )
    .await;
    app.stop().await;
}

async fn only_tenant_managers_configure_sso(backend: Backend) {
    let Some((app, provider, acme)) = setup(backend).await else {
        return;
    };
    only_tenant_managers_may_configure(&app, &acme, CONNECTION, || {
        connection_body(&provider.issuer)
    })
    .await;
    // Mapping to the owner role is refused; so is an unknown role.
    let mut owner = connection_body(&provider.issuer);
    owner["role_mapping"]["values"]["root"] = json!("owner");
    app.put(CONNECTION, &acme.owner_token, owner)
        .await
        .expect_problem(422, "validation_failed");
    let mut unknown = connection_body(&provider.issuer);
    unknown["role_mapping"]["default_role"] = json!("no-such-role");
    app.put(CONNECTION, &acme.owner_token, unknown)
        .await
        .expect_problem(422, "validation_failed");
    // The secret may be left out to keep it; creating needs it.
    let mut keep = connection_body(&provider.issuer);
    keep.as_object_mut().unwrap().remove("client_secret");
    app.put(CONNECTION, &acme.owner_token, keep.clone())
        .await
        .expect(200);
    sso_login(&app, "acme").await.expect(200);
    app.delete(CONNECTION, &acme.owner_token).await.expect(204);
    app.put(CONNECTION, &acme.owner_token, keep)
        .await
        .expect_problem(422, "validation_failed");
    app.stop().await;
}

async fn keys_are_cached_and_read_again_for_an_unknown_kid(backend: Backend) {
    let Some((app, provider, _)) = setup(backend).await else {
        return;
    };
    sso_login(&app, "acme").await.expect(200);
    sso_login(&app, "acme").await.expect(200);
    let (discovery, keys) = provider.document_requests();
    assert_eq!(keys, 1, "the key set is read once and cached");
    assert_eq!(
        discovery, 1,
        "discovery (read when configured) is cached too"
    );

    // The provider rotates its key: the unknown kid makes Karen read the key
    // set again, but not more than once a minute.
    provider.rotate_rsa_key("rsa-2");
    app.clock.advance(Duration::from_secs(30));
    expect_refused(&sso_login(&app, "acme").await, "signature");
    assert_eq!(
        provider.document_requests().1,
        1,
        "too soon to read the keys again"
    );
    app.clock.advance(Duration::from_secs(31));
    sso_login(&app, "acme").await.expect(200);
    assert_eq!(provider.document_requests().1, 2);
    sso_login(&app, "acme").await.expect(200);
    assert_eq!(
        provider.document_requests().1,
        2,
        "the new key set is cached"
    );
    app.stop().await;
}

/// ASVS 7.6.1: a session opened through the provider lives by Karen's
/// documented lifetimes, and past them only a new sign-in at the provider
/// opens another.
async fn sso_sessions_end_like_any_other_and_a_new_one_needs_the_provider(backend: Backend) {
    let Some((app, _provider, _acme)) = setup(backend).await else {
        return;
    };
    let hour = Duration::from_secs(3600);
    let refresh = |token: String| {
        app.call(
            "POST",
            "/v1/auth/refresh",
            None,
            Some(json!({ "refresh_token": token })),
        )
    };
    // Unused for longer than the idle timeout (72 hours), it ends.
    let idle = sso_login(&app, "acme").await;
    let idle = idle.expect(200).str("refresh_token").to_owned();
    app.clock.advance(73 * hour);
    refresh(idle).await.expect_problem(401, "invalid_token");
    // Used every 70 hours, it still ends 30 days after the sign-in.
    let busy = sso_login(&app, "acme").await;
    let mut token = busy.expect(200).str("refresh_token").to_owned();
    for _ in 0..10 {
        app.clock.advance(70 * hour);
        let reply = refresh(token).await;
        token = reply.expect(200).str("refresh_token").to_owned();
    }
    app.clock.advance(20 * hour);
    refresh(token).await.expect_problem(401, "invalid_token");
    // A new round trip through the provider opens a new session.
    let again = sso_login(&app, "acme").await;
    app.get("/v1/me", again.expect(200).str("access_token"))
        .await
        .expect(200);
    app.stop().await;
}

on_both_backends!(
    sso_sessions_end_like_any_other_and_a_new_one_needs_the_provider,
    keys_are_cached_and_read_again_for_an_unknown_kid,
    first_login_creates_the_user_and_later_ones_match_by_subject,
    every_bad_id_token_is_refused,
    state_and_pkce_bind_the_code_to_one_login,
    a_provider_outage_is_a_502_and_recorded,
    issuers_follow_the_outbound_policy_and_no_redirects,
    required_sso_refuses_password_logins_of_non_owners,
    only_tenant_managers_configure_sso,
);
