//! Authentication: tokens (expired, forged, wrong kid, `alg: none`, foreign
//! key, algorithm confusion), refresh rotation and reuse, throttling and
//! lockout, disabled users, suspended tenants, logout, key rotation.

use std::time::Duration;

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use karen_testkit::{Backend, PASSWORD, TestApp, spawn, spawn_with};
use serde_json::{Value, json};

fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let header =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    let claims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    (header, claims, it.next().unwrap().to_owned())
}

fn encode(part: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(part).unwrap())
}

async fn me_status(app: &TestApp, token: &str) -> (u16, String) {
    let reply = app.get("/v1/me", token).await;
    (
        reply.status,
        reply.body["code"].as_str().unwrap_or_default().to_owned(),
    )
}

pub(crate) async fn refresh(app: &TestApp, refresh_token: &str) -> karen_testkit::Reply {
    app.call(
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh_token})),
    )
    .await
}

async fn tampered_and_foreign_tokens_are_refused(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    let token = acme.owner_token.clone();
    assert_eq!(me_status(&app, &token).await.0, 200);
    let (header, claims, signature) = parts(&token);

    // Signature of another token / a flipped byte.
    let mut flipped = URL_SAFE_NO_PAD.decode(&signature).unwrap();
    flipped[0] ^= 1;
    let forged = format!(
        "{}.{}.{}",
        encode(&header),
        encode(&claims),
        URL_SAFE_NO_PAD.encode(flipped)
    );
    assert_eq!(
        me_status(&app, &forged).await,
        (401, "invalid_token".into())
    );

    // Claims re-pointed at another tenant and user, keeping the signature.
    let mut moved = claims.clone();
    moved["tid"] = json!(other.id);
    moved["sub"] = json!(other.owner_id);
    let forged = format!("{}.{}.{}", encode(&header), encode(&moved), signature);
    assert_eq!(
        me_status(&app, &forged).await,
        (401, "invalid_token".into())
    );

    // Unknown kid.
    let mut unknown = header.clone();
    unknown["kid"] = json!(uuid::Uuid::now_v7());
    let forged = format!("{}.{}.{}", encode(&unknown), encode(&claims), signature);
    assert_eq!(
        me_status(&app, &forged).await,
        (401, "invalid_token".into())
    );

    // alg: none, with and without a signature part.
    let none = json!({"alg": "none", "typ": "JWT", "kid": header["kid"]});
    for forged in [
        format!("{}.{}.", encode(&none), encode(&claims)),
        format!("{}.{}", encode(&none), encode(&claims)),
    ] {
        assert_eq!(
            me_status(&app, &forged).await,
            (401, "invalid_token".into())
        );
    }

    // A well-formed token signed by a key Karen does not hold, claiming Karen's kid.
    let pair = Ed25519KeyPair::generate().unwrap();
    let pkcs8 = pair.to_pkcs8().unwrap();
    let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    jwt_header.kid = header["kid"].as_str().map(str::to_owned);
    let foreign = jsonwebtoken::encode(
        &jwt_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
    )
    .unwrap();
    assert_eq!(
        me_status(&app, &foreign).await,
        (401, "invalid_token".into())
    );

    // Algorithm confusion: HS256 "signed" with a guessable secret.
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = header["kid"].as_str().map(str::to_owned);
    let confused = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"karen"),
    )
    .unwrap();
    assert_eq!(
        me_status(&app, &confused).await,
        (401, "invalid_token".into())
    );

    // Garbage.
    for junk in ["x", "a.b.c", "krn_", "krr_AAAA", &"A".repeat(5000)] {
        assert_eq!(me_status(&app, junk).await.0, 401, "{junk}");
    }
    app.stop().await;
}

async fn access_tokens_expire(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    app.clock.advance(Duration::from_secs(14 * 60));
    assert_eq!(me_status(&app, &acme.owner_token).await.0, 200);
    app.clock.advance(Duration::from_secs(2 * 60));
    let reply = app.get("/v1/me", &acme.owner_token).await;
    reply.expect_problem(401, "token_expired");
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    // The refresh token still works and yields a fresh access token.
    let pair = refresh(&app, &acme.owner_refresh).await;
    assert_eq!(
        me_status(&app, pair.expect(200).str("access_token"))
            .await
            .0,
        200
    );
    app.stop().await;
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let first = refresh(&app, &acme.owner_refresh).await;
    first.expect(200);
    let second_refresh = first.str("refresh_token").to_owned();
    assert_ne!(second_refresh, acme.owner_refresh);
    let access = first.str("access_token").to_owned();
    assert_eq!(me_status(&app, &access).await.0, 200);
    // The spent token is presented again (a thief, or the victim after one).
    refresh(&app, &acme.owner_refresh)
        .await
        .expect_problem(401, "invalid_token");
    // The whole family is revoked: the newest refresh token and the session's access tokens.
    refresh(&app, &second_refresh)
        .await
        .expect_problem(401, "invalid_token");
    assert_eq!(
        me_status(&app, &access).await,
        (401, "invalid_token".into())
    );
    assert_eq!(
        me_status(&app, &acme.owner_token).await,
        (401, "invalid_token".into())
    );
    // Other sessions of the same user are unaffected.
    let other_session = app.token("acme", &acme.owner_email, PASSWORD).await;
    assert_eq!(me_status(&app, &other_session).await.0, 200);
    app.stop().await;
}

async fn concurrent_refreshes_of_one_token_never_both_succeed(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let attempts =
        futures::future::join_all((0..6).map(|_| refresh(&app, &acme.owner_refresh))).await;
    let succeeded = attempts.iter().filter(|r| r.status == 200).count();
    assert!(
        succeeded <= 1,
        "{succeeded} concurrent refreshes of one token succeeded"
    );
    for reply in attempts.iter().filter(|r| r.status != 200) {
        reply.expect_problem(401, "invalid_token");
    }
    app.stop().await;
}

async fn failed_logins_slow_down_then_lock_the_account(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        c.auth.delay_after_failures = 2;
        c.auth.lockout_after_failures = 5;
        c.auth.lockout_minutes = 15;
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let wrong = |n: u32| format!("wrong password number {n}");
    // Two plain failures.
    for n in 0..2 {
        app.login("acme", &acme.owner_email, &wrong(n))
            .await
            .expect_problem(401, "invalid_credentials");
    }
    // From now on each attempt must wait (1 s, 2 s, 4 s …); an early attempt is refused
    // with Retry-After and does not count.
    let early = app.login("acme", &acme.owner_email, PASSWORD).await;
    early.expect_problem(429, "login_throttled");
    assert!(early.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    for n in 2..4 {
        app.clock.advance(Duration::from_secs(10));
        app.login("acme", &acme.owner_email, &wrong(n))
            .await
            .expect_problem(401, "invalid_credentials");
    }
    app.clock.advance(Duration::from_secs(10));
    // The fifth failure locks the account for 15 minutes.
    let locked = app.login("acme", &acme.owner_email, &wrong(4)).await;
    locked.expect_problem(423, "account_locked");
    assert!(
        locked
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 800
    );
    // Even the right password is refused while locked.
    app.clock.advance(Duration::from_secs(60));
    app.login("acme", &acme.owner_email, PASSWORD)
        .await
        .expect_problem(423, "account_locked");
    // Other accounts are unaffected.
    let (_, _) = app.create_user(&acme, "bob@acme.test", &["member"]).await;
    // After the lockout the right password works and clears the count.
    app.clock.advance(Duration::from_secs(15 * 60));
    app.login("acme", &acme.owner_email, PASSWORD)
        .await
        .expect(200);
    app.login("acme", &acme.owner_email, &wrong(9))
        .await
        .expect_problem(401, "invalid_credentials");
    app.stop().await;
}

/// Runs the same failing sequence against an address; returns (status, code) of each answer.
async fn failing_sequence(app: &TestApp, tenant: &str, email: &str) -> Vec<(u16, String)> {
    let mut seen = Vec::new();
    for n in 0..7 {
        let reply = app
            .login(tenant, email, &format!("wrong password number {n}"))
            .await;
        seen.push((
            reply.status,
            reply.body["code"].as_str().unwrap_or_default().to_owned(),
        ));
        if reply.status == 429 {
            // Waited out, the attempt is counted.
            app.clock.advance(Duration::from_secs(70));
            let reply = app
                .login(tenant, email, &format!("wrong password again {n}"))
                .await;
            seen.push((
                reply.status,
                reply.body["code"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    seen
}

async fn unknown_accounts_are_throttled_exactly_like_real_ones(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        c.auth.delay_after_failures = 2;
        c.auth.lockout_after_failures = 4;
        c.auth.ip_max_failures = 1000;
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let real = failing_sequence(&app, "acme", &acme.owner_email).await;
    let unknown_user = failing_sequence(&app, "acme", "nobody@acme.test").await;
    let unknown_tenant = failing_sequence(&app, "no-such-org", "nobody@nowhere.test").await;
    assert!(
        real.iter().any(|(s, _)| *s == 423),
        "the real account locks: {real:?}"
    );
    assert!(
        real.iter().any(|(s, _)| *s == 429),
        "the real account is throttled: {real:?}"
    );
    assert_eq!(
        real, unknown_user,
        "an unknown email must answer like a real account"
    );
    assert_eq!(
        real, unknown_tenant,
        "an unknown tenant must answer like a real account"
    );
    app.stop().await;
}

async fn an_expired_lock_starts_a_fresh_count_and_admins_can_unlock(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        c.auth.delay_after_failures = 10;
        c.auth.lockout_after_failures = 3;
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (bob, _) = app.create_user(&acme, "bob@acme.test", &["member"]).await;
    for n in 0..2 {
        app.login("acme", "bob@acme.test", &format!("nope {n} nope nope"))
            .await
            .expect_problem(401, "invalid_credentials");
    }
    app.login("acme", "bob@acme.test", "nope 2 nope nope")
        .await
        .expect_problem(423, "account_locked");
    // When the lock has run out, one more failure is just a failure.
    app.clock.advance(Duration::from_secs(16 * 60));
    app.login("acme", "bob@acme.test", "nope 3 nope nope")
        .await
        .expect_problem(401, "invalid_credentials");
    app.login("acme", "bob@acme.test", "nope 4 nope nope")
        .await
        .expect_problem(401, "invalid_credentials");
    app.login("acme", "bob@acme.test", "nope 5 nope nope")
        .await
        .expect_problem(423, "account_locked");
    // An administrator lifts the lock at once.
    let owner = app.token("acme", &acme.owner_email, PASSWORD).await;
    app.post(&format!("/v1/users/{bob}/unlock"), &owner, json!({}))
        .await
        .expect(200);
    app.login("acme", "bob@acme.test", PASSWORD)
        .await
        .expect(200);
    app.stop().await;
}

/// Failures spread out over time fade the same way for real and unknown
/// accounts: neither locks, and their answers stay the same.
async fn slow_failures_fade_alike_for_real_and_unknown_accounts(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        c.auth.delay_after_failures = 2;
        c.auth.lockout_after_failures = 3;
        c.auth.ip_max_failures = 1000;
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let mut answers = Vec::new();
    for n in 0..6 {
        let real = app
            .login("acme", &acme.owner_email, &format!("slow guess {n} wrong"))
            .await;
        let unknown = app
            .login("acme", "nobody@acme.test", &format!("slow guess {n} wrong"))
            .await;
        answers.push((real.status, unknown.status));
        // Longer than the lockout plus the longest wait: the failures fade.
        app.clock.advance(Duration::from_secs(20 * 60));
    }
    assert!(
        answers
            .iter()
            .all(|(real, unknown)| *real == 401 && *unknown == 401),
        "{answers:?}"
    );
    app.stop().await;
}

async fn one_address_failing_everywhere_is_refused(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| c.auth.ip_max_failures = 4).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    // Spraying many accounts (existing or not, tenants existing or not) from one address.
    for (tenant, email) in [
        ("acme", "a@acme.test"),
        ("acme", "b@acme.test"),
        ("nope", "c@x.test"),
        ("acme", "d@acme.test"),
    ] {
        app.login(tenant, email, "whatever password")
            .await
            .expect_problem(401, "invalid_credentials");
    }
    let refused = app.login("acme", &acme.owner_email, PASSWORD).await;
    refused.expect_problem(429, "login_throttled");
    assert!(refused.header("retry-after").is_some());
    app.stop().await;
}

async fn unknown_tenant_email_and_wrong_password_look_alike(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let replies = [
        app.login("acme", &acme.owner_email, "not the password at all")
            .await,
        app.login("acme", "nobody@acme.test", PASSWORD).await,
        app.login("no-such-tenant", &acme.owner_email, PASSWORD)
            .await,
        app.login("NOT A SLUG", "not an email", "x").await,
    ];
    for reply in &replies {
        reply.expect_problem(401, "invalid_credentials");
        assert_eq!(reply.body["detail"], replies[0].body["detail"]);
    }
    app.stop().await;
}

async fn disabling_a_user_ends_everything_at_once(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (bob, bob_token) = app.create_user(&acme, "bob@acme.test", &["member"]).await;
    let bob_login = app.login("acme", "bob@acme.test", PASSWORD).await;
    let bob_refresh = bob_login.str("refresh_token").to_owned();
    let (_, bob_key) = app
        .create_api_key(&bob_token, json!({"name": "bob's key"}))
        .await;
    assert_eq!(me_status(&app, &bob_key).await.0, 200);
    app.post(
        &format!("/v1/users/{bob}/disable"),
        &acme.owner_token,
        json!({}),
    )
    .await
    .expect(200);
    assert_eq!(
        me_status(&app, &bob_token).await,
        (403, "user_disabled".into())
    );
    assert_eq!(
        me_status(&app, &bob_key).await,
        (403, "user_disabled".into())
    );
    refresh(&app, &bob_refresh)
        .await
        .expect_problem(401, "invalid_token");
    app.login("acme", "bob@acme.test", PASSWORD)
        .await
        .expect_problem(403, "user_disabled");
    // Enabled again, Bob logs in anew; old sessions stay dead.
    app.post(
        &format!("/v1/users/{bob}/enable"),
        &acme.owner_token,
        json!({}),
    )
    .await
    .expect(200);
    assert_eq!(me_status(&app, &bob_token).await.0, 401);
    assert_eq!(me_status(&app, &bob_key).await.0, 200);
    app.login("acme", "bob@acme.test", PASSWORD)
        .await
        .expect(200);
    app.stop().await;
}

async fn suspended_tenants_are_refused_with_a_clear_problem(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, key) = app
        .create_api_key(&acme.owner_token, json!({"name": "k"}))
        .await;
    let op = app.operator_key.clone();
    app.post(
        &format!("/v1/platform/tenants/{}/suspend", acme.id),
        &op,
        json!({}),
    )
    .await
    .expect(200);
    for credential in [&acme.owner_token, &key] {
        app.get("/v1/me", credential)
            .await
            .expect_problem(403, "tenant_suspended");
    }
    app.login("acme", &acme.owner_email, PASSWORD)
        .await
        .expect_problem(403, "tenant_suspended");
    refresh(&app, &acme.owner_refresh)
        .await
        .expect_problem(403, "tenant_suspended");
    // A wrong password does not reveal the suspension.
    app.login("acme", &acme.owner_email, "wrong wrong wrong")
        .await
        .expect_problem(401, "invalid_credentials");
    app.post(
        &format!("/v1/platform/tenants/{}/resume", acme.id),
        &op,
        json!({}),
    )
    .await
    .expect(200);
    assert_eq!(me_status(&app, &acme.owner_token).await.0, 200);
    assert_eq!(me_status(&app, &key).await.0, 200);
    app.stop().await;
}

async fn logout_and_logout_everywhere(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let laptop = app.login("acme", &acme.owner_email, PASSWORD).await;
    let laptop_token = laptop.str("access_token").to_owned();
    app.post("/v1/auth/logout", &acme.owner_token, json!({}))
        .await
        .expect(204);
    assert_eq!(me_status(&app, &acme.owner_token).await.0, 401);
    refresh(&app, &acme.owner_refresh)
        .await
        .expect_problem(401, "invalid_token");
    assert_eq!(
        me_status(&app, &laptop_token).await.0,
        200,
        "logout ends only the current session"
    );
    let phone = app.token("acme", &acme.owner_email, PASSWORD).await;
    let ended = app.post("/v1/auth/logout-all", &phone, json!({})).await;
    assert_eq!(ended.expect(200).body["sessions_revoked"], 2);
    for token in [&laptop_token, &phone] {
        assert_eq!(me_status(&app, token).await.0, 401);
    }
    refresh(&app, laptop.str("refresh_token"))
        .await
        .expect_problem(401, "invalid_token");
    // A new login right afterwards works.
    let fresh = app.token("acme", &acme.owner_email, PASSWORD).await;
    assert_eq!(me_status(&app, &fresh).await.0, 200);
    // An API key has no session to log out of.
    let (_, key) = app.create_api_key(&fresh, json!({"name": "k"})).await;
    app.post("/v1/auth/logout", &key, json!({}))
        .await
        .expect_problem(403, "forbidden");
    app.stop().await;
}

async fn password_change_requires_the_old_one_and_ends_other_sessions(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.token("acme", &acme.owner_email, PASSWORD).await;
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    app.post(
        "/v1/me/password",
        &acme.owner_token,
        change("wrong current pw", "a brand new passphrase"),
    )
    .await
    .expect_problem(422, "validation_failed");
    app.post(
        "/v1/me/password",
        &acme.owner_token,
        change(PASSWORD, "short"),
    )
    .await
    .expect_problem(422, "validation_failed");
    app.post(
        "/v1/me/password",
        &acme.owner_token,
        change(PASSWORD, "a brand new passphrase"),
    )
    .await
    .expect(204);
    assert_eq!(
        me_status(&app, &acme.owner_token).await.0,
        200,
        "the current session stays"
    );
    assert_eq!(me_status(&app, &other).await.0, 401, "other sessions end");
    app.login("acme", &acme.owner_email, PASSWORD)
        .await
        .expect_problem(401, "invalid_credentials");
    app.login("acme", &acme.owner_email, "a brand new passphrase")
        .await
        .expect(200);
    app.stop().await;
}

async fn signing_keys_rotate_without_logging_anyone_out(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (before, _, _) = parts(&acme.owner_token);
    let new_kid = app.karen.services.auth.rotate_signing_key().await.unwrap();
    assert_eq!(
        me_status(&app, &acme.owner_token).await.0,
        200,
        "tokens of the retired key still verify"
    );
    let after = app.token("acme", &acme.owner_email, PASSWORD).await;
    let (header, _, _) = parts(&after);
    assert_eq!(header["kid"], json!(new_kid.to_string()));
    assert_ne!(header["kid"], before["kid"]);
    assert_eq!(header["alg"], "EdDSA");
    // Once every token of the retired key has expired, the key no longer verifies anything.
    app.clock.advance(Duration::from_secs(20 * 60));
    assert_eq!(me_status(&app, &acme.owner_token).await.0, 401);
    app.stop().await;
}

on_both_backends!(
    tampered_and_foreign_tokens_are_refused,
    access_tokens_expire,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    concurrent_refreshes_of_one_token_never_both_succeed,
    failed_logins_slow_down_then_lock_the_account,
    one_address_failing_everywhere_is_refused,
    unknown_tenant_email_and_wrong_password_look_alike,
    unknown_accounts_are_throttled_exactly_like_real_ones,
    slow_failures_fade_alike_for_real_and_unknown_accounts,
    an_expired_lock_starts_a_fresh_count_and_admins_can_unlock,
    disabling_a_user_ends_everything_at_once,
    suspended_tenants_are_refused_with_a_clear_problem,
    logout_and_logout_everywhere,
    password_change_requires_the_old_one_and_ends_other_sessions,
    signing_keys_rotate_without_logging_anyone_out,
);
