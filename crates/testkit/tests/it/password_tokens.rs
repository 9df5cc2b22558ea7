//! Single-use, expiring password tokens (ASVS 6.4.1, 6.4.3): an account
//! created without a password has none that works and sets its first one
//! with a setup token; an administrator resets a forgotten password by
//! issuing a reset token (within their own rights, in their own tenant). A
//! token works once, expires, is superseded by a newer one, ends every
//! session of the account, never signs anyone in (so the second factor is
//! still asked), and never reaches the audit trail. Every unusable token
//! gets the same answer, counted against the client's address.

use std::time::Duration;

use karen_testkit::{Backend, PASSWORD, Reply, TestApp, spawn, spawn_with, totp_code};
use serde_json::{Value, json};
use uuid::Uuid;

/// A password the policy accepts and that no test account starts with.
const NEW_PASSWORD: &str = "violet lantern orbit 2049";

async fn set_password(app: &TestApp, token: &str, new_password: &str) -> Reply {
    let body = json!({"token": token, "new_password": new_password});
    app.call("POST", "/v1/auth/password", None, Some(body))
        .await
}

/// The token of a `password_setup` answer (or of a reset), checking its
/// shape and that it expires `ttl` after now.
fn token_of(app: &TestApp, setup: &Value, ttl: Duration) -> String {
    let token = setup["token"].as_str().unwrap_or_else(|| panic!("{setup}"));
    assert!(token.starts_with("kps_"), "{token}");
    let expires_at = setup["expires_at"].as_str().unwrap();
    let expires_at =
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let expected = karen_domain::Clock::now(app.clock.as_ref()) + ttl;
    assert!(
        (expires_at - expected).abs() <= time::Duration::SECOND,
        "expires {expires_at}, expected {expected}"
    );
    token.to_owned()
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Creates a user without a password as `manager`; returns its id and setup token.
async fn invite(app: &TestApp, manager: &str, email: &str) -> (Uuid, String) {
    let reply = app
        .post(
            "/v1/users",
            manager,
            json!({"email": email, "roles": ["member"]}),
        )
        .await;
    reply.expect(201);
    assert!(
        reply.body.get("initial_password").is_none(),
        "{}",
        reply.text
    );
    let token = token_of(app, &reply.body["password_setup"], DAY);
    (reply.uuid("/user/id"), token)
}

async fn reset(app: &TestApp, token: &str, user: Uuid) -> Reply {
    let path = format!("/v1/users/{user}/password-reset");
    app.post(&path, token, json!({})).await
}

/// A refusal of a token, without its request id (to compare refusals).
#[track_caller]
fn refused(reply: &Reply) -> Value {
    reply.expect_problem(401, "invalid_token");
    let mut body = reply.body.clone();
    body.as_object_mut().unwrap().remove("request_id");
    body
}

async fn audit_trail(app: &TestApp, token: &str) -> Reply {
    let trail = app.get("/v1/audit?limit=200", token).await;
    trail.expect(200);
    trail
}

fn has_action(trail: &Reply, action: &str, target: Uuid) -> bool {
    trail.body["items"].as_array().unwrap().iter().any(|event| {
        event["action"] == action && event["target_id"].as_str() == Some(&target.to_string())
    })
}

async fn created_without_a_password_the_account_sets_one_with_its_token(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (user, token) = invite(&app, &acme.owner_token, "new@acme.test").await;
    // No password works before the token is used (two guesses: a third
    // failure would make the account wait).
    for guess in [PASSWORD, NEW_PASSWORD] {
        app.login("acme", "new@acme.test", guess)
            .await
            .expect_problem(401, "invalid_credentials");
    }
    // A refused password writes nothing and leaves the token usable.
    for (weak, reason) in [
        ("short", "at least 12"),
        ("acme acme acme rocks", "organisation"),
    ] {
        let reply = set_password(&app, &token, weak).await;
        reply.expect_problem(422, "validation_failed");
        assert_eq!(reply.body["field"], "new_password", "{}", reply.text);
        assert!(reply.str("detail").contains(reason), "{}", reply.text);
    }
    let trail = audit_trail(&app, &acme.owner_token).await;
    assert!(has_action(&trail, "user.password_setup.issued", user));
    assert!(!has_action(&trail, "auth.password.set", user));
    // The token is no bearer credential anywhere.
    for path in ["/v1/me", "/v1/platform/tenants"] {
        app.get(path, &token)
            .await
            .expect_problem(401, "invalid_token");
    }

    let done = set_password(&app, &token, NEW_PASSWORD).await;
    done.expect(204);
    assert!(done.text.is_empty(), "nobody is signed in: {}", done.text);
    app.token("acme", "new@acme.test", NEW_PASSWORD).await;
    // The token worked once.
    refused(&set_password(&app, &token, "another fine passphrase").await);
    app.token("acme", "new@acme.test", NEW_PASSWORD).await;

    // An owner created by the operator without a password, the same way.
    let created = app
        .post(
            "/v1/platform/tenants",
            &app.operator_key,
            json!({"slug": "newco", "name": "NewCo", "owner_email": "boss@newco.test"}),
        )
        .await;
    created.expect(201);
    assert!(created.body.get("initial_password").is_none());
    let owner_token = token_of(&app, &created.body["password_setup"], DAY);
    app.login("newco", "boss@newco.test", PASSWORD)
        .await
        .expect_problem(401, "invalid_credentials");
    set_password(&app, &owner_token, NEW_PASSWORD)
        .await
        .expect(204);
    let owner = app.token("newco", "boss@newco.test", NEW_PASSWORD).await;

    // The trail records issue and use, never the tokens.
    let trail = audit_trail(&app, &acme.owner_token).await;
    assert!(has_action(&trail, "auth.password.set", user));
    let newco = audit_trail(&app, &owner).await;
    let owner_id = created.uuid("/owner/id");
    assert!(has_action(&newco, "user.password_setup.issued", owner_id));
    assert!(has_action(&newco, "auth.password.set", owner_id));
    for text in [&trail.text, &newco.text] {
        assert!(!text.contains(&token) && !text.contains(&owner_token));
        assert!(!text.contains("kps_") && !text.contains(NEW_PASSWORD));
    }
    app.stop().await;
}

async fn tokens_work_once_expire_and_yield_to_newer_ones(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (user, first) = invite(&app, &acme.owner_token, "late@acme.test").await;
    // A reset supersedes the setup token.
    let second = reset(&app, &acme.owner_token, user).await;
    second.expect(201);
    let second = token_of(&app, &second.body, DAY);
    let mut refusals = vec![refused(&set_password(&app, &first, NEW_PASSWORD).await)];
    // Past its lifetime the newer one is refused too.
    app.clock.advance(DAY + Duration::from_secs(1));
    refusals.push(refused(&set_password(&app, &second, NEW_PASSWORD).await));
    let owner = app.token("acme", &acme.owner_email, PASSWORD).await;
    let third = reset(&app, &owner, user).await;
    let third = token_of(&app, &third.expect(201).body, DAY);
    set_password(&app, &third, NEW_PASSWORD).await.expect(204);
    // Spent, forged, garbage, another kind of credential: the same answer.
    // The ids are right, one character of the secret is not.
    let mut forged: Vec<char> = third.chars().collect();
    let at = forged.len() - 5;
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let login = app.login("acme", "late@acme.test", NEW_PASSWORD).await;
    let refresh = login.expect(200).str("refresh_token").to_owned();
    for token in [third.as_str(), &forged, "kps_garbage", &refresh, ""] {
        refusals.push(refused(&set_password(&app, token, NEW_PASSWORD).await));
    }
    // A disabled user's token, and a suspended tenant's.
    let (disabled, disabled_token) = invite(&app, &owner, "gone@acme.test").await;
    app.post(&format!("/v1/users/{disabled}/disable"), &owner, json!({}))
        .await
        .expect(200);
    refusals.push(refused(
        &set_password(&app, &disabled_token, NEW_PASSWORD).await,
    ));
    reset(&app, &owner, disabled)
        .await
        .expect_problem(409, "conflict");
    let bravo = app.create_tenant("bravo").await;
    let (_, bravo_token) = invite(&app, &bravo.owner_token, "held@bravo.test").await;
    app.post(
        &format!("/v1/platform/tenants/{}/suspend", bravo.id),
        &app.operator_key,
        json!({}),
    )
    .await
    .expect(200);
    refusals.push(refused(
        &set_password(&app, &bravo_token, NEW_PASSWORD).await,
    ));
    for refusal in &refusals {
        assert_eq!(refusal, &refusals[0], "refusals differ");
    }
    let detail = refusals[0]["detail"].as_str().unwrap();
    for word in ["expired", "used", "disabled", "suspended", "superseded"] {
        assert!(!detail.contains(word), "the refusal says why: {detail}");
    }
    // A refused token that exists is recorded against its account.
    let trail = audit_trail(&app, &owner).await;
    assert!(has_action(&trail, "auth.password.set.failed", user));
    assert!(has_action(&trail, "auth.password.set.failed", disabled));
    app.stop().await;
}

async fn failed_tokens_count_toward_the_address_limit(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        c.server.trusted_proxy_hops = 1;
        c.auth.ip_max_failures = 3;
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, token) = invite(&app, &acme.owner_token, "new@acme.test").await;
    let from = |ip: &'static str, token: &str| {
        let body = json!({"token": token, "new_password": NEW_PASSWORD});
        app.post_from(ip, "/v1/auth/password", body)
    };
    for _ in 0..3 {
        from("203.0.113.9", "kps_guessed").await.expect(401);
    }
    // The address has failed enough: tokens and password logins wait.
    from("203.0.113.9", &token)
        .await
        .expect_problem(429, "login_throttled");
    let login = json!({"tenant": "acme", "email": acme.owner_email, "password": PASSWORD});
    app.post_from("203.0.113.9", "/v1/auth/login", login)
        .await
        .expect_problem(429, "login_throttled");
    // Another address uses the token.
    from("198.51.100.5", &token).await.expect(204);
    app.stop().await;
}

async fn admins_reset_within_their_rights_and_the_reset_ends_sessions(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let bravo = app.create_tenant("bravo").await;
    let (admin_id, admin) = app.create_user(&acme, "admin@acme.test", &["admin"]).await;
    let (member_id, member) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;
    let (bravo_user, _) = app
        .create_user(&bravo, "member@bravo.test", &["member"])
        .await;
    // Denied: without users:manage, for someone holding more rights, in
    // another tenant (exactly like an id that exists nowhere).
    reset(&app, &member, member_id)
        .await
        .expect_problem(403, "permission_denied");
    reset(&app, &admin, acme.owner_id)
        .await
        .expect_problem(403, "forbidden");
    let foreign = reset(&app, &admin, bravo_user).await;
    foreign.expect_problem(404, "not_found");
    let missing = reset(&app, &admin, Uuid::now_v7()).await;
    missing.expect_problem(404, "not_found");
    assert_eq!(foreign.body["detail"], missing.body["detail"]);

    // Allowed: an admin resets a member. The old password works until the token is used.
    let login = app.login("acme", "member@acme.test", PASSWORD).await;
    let refresh = login.expect(200).str("refresh_token").to_owned();
    let issued = reset(&app, &admin, member_id).await;
    let token = token_of(&app, &issued.expect(201).body, DAY);
    app.get("/v1/me", &member).await.expect(200);
    app.token("acme", "member@acme.test", PASSWORD).await;
    set_password(&app, &token, NEW_PASSWORD).await.expect(204);
    // Every session of the account ended; only the new password signs in.
    app.get("/v1/me", &member)
        .await
        .expect_problem(401, "invalid_token");
    app.call(
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    )
    .await
    .expect_problem(401, "invalid_token");
    app.login("acme", "member@acme.test", PASSWORD)
        .await
        .expect_problem(401, "invalid_credentials");
    app.token("acme", "member@acme.test", NEW_PASSWORD).await;

    let trail = audit_trail(&app, &acme.owner_token).await;
    let issued = trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "user.password_reset.issued")
        .unwrap_or_else(|| panic!("{}", trail.text));
    assert_eq!(issued["target_id"], member_id.to_string());
    assert_eq!(issued["actor"]["kind"], "user");
    assert_eq!(issued["actor"]["id"], admin_id.to_string());
    assert!(has_action(&trail, "auth.password.set", member_id));
    assert!(!trail.text.contains(&token) && !trail.text.contains("kps_"));
    // Bravo's user was untouched.
    app.token("bravo", "member@bravo.test", PASSWORD).await;
    app.stop().await;
}

async fn the_second_factor_is_still_asked_after_a_reset(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (member_id, member) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;
    let started = app.post("/v1/auth/mfa/totp", &member, json!({})).await;
    let secret = started.expect(200).str("secret").to_owned();
    let code = totp_code(&secret, karen_domain::Clock::now(app.clock.as_ref()));
    app.post("/v1/auth/mfa/totp/confirm", &member, json!({"code": code}))
        .await
        .expect(200);
    let issued = reset(&app, &acme.owner_token, member_id).await;
    let token = token_of(&app, &issued.expect(201).body, DAY);
    let done = set_password(&app, &token, NEW_PASSWORD).await;
    done.expect(204);
    assert!(done.body.get("access_token").is_none());
    let login = app.login("acme", "member@acme.test", NEW_PASSWORD).await;
    assert_eq!(login.expect(200).str("status"), "mfa_required");
    assert!(login.body.get("access_token").is_none(), "{}", login.text);
    app.stop().await;
}

async fn the_token_lifetime_is_configured(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| c.auth.password_setup_ttl_hours = 2).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let reply = app
        .post(
            "/v1/users",
            &acme.owner_token,
            json!({"email": "new@acme.test"}),
        )
        .await;
    let two_hours = Duration::from_secs(2 * 3600);
    let token = token_of(&app, &reply.expect(201).body["password_setup"], two_hours);
    app.clock.advance(two_hours);
    refused(&set_password(&app, &token, NEW_PASSWORD).await);
    app.stop().await;
}

on_both_backends!(
    created_without_a_password_the_account_sets_one_with_its_token,
    tokens_work_once_expire_and_yield_to_newer_ones,
    failed_tokens_count_toward_the_address_limit,
    admins_reset_within_their_rights_and_the_reset_ends_sessions,
    the_second_factor_is_still_asked_after_a_reset,
    the_token_lifetime_is_configured,
);
