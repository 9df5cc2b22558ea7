//! Multi-factor authentication: TOTP enrollment and confirmation, the two-step
//! login (codes computed here from the secret and the test clock), reused and
//! wrong codes, recovery codes, a challenge that grants nothing, the tenant
//! policy, the admin reset, throttling of failed codes and the audit trail.

use std::time::Duration;

use karen_domain::clock::Clock;
use karen_testkit::{Backend, PASSWORD, Reply, TestApp, TestTenant, spawn, spawn_with, totp_code};
use serde_json::{Value, json};

const STEP: Duration = Duration::from_secs(30);

/// The code the authenticator app shows now (by the server's clock).
fn current_code(app: &TestApp, secret: &str) -> String {
    totp_code(secret, app.clock.now())
}

/// A six-digit code that is none of the codes accepted around now.
fn wrong_code(app: &TestApp, secret: &str) -> String {
    let now = app.clock.now();
    let near: Vec<String> = [-60i64, -30, 0, 30, 60]
        .iter()
        .map(|s| totp_code(secret, now + time::Duration::seconds(*s)))
        .collect();
    (0..)
        .map(|n: u32| format!("{:06}", (n * 7919) % 1_000_000))
        .find(|c| !near.contains(c))
        .unwrap()
}

/// Enrolls and confirms an authenticator for `token`'s user; returns the secret
/// and the recovery codes. Moves the clock one step on, so the confirming
/// code is spent and the next one differs.
async fn enroll(app: &TestApp, token: &str) -> (String, Vec<String>) {
    let started = app.post("/v1/auth/mfa/totp", token, json!({})).await;
    started.expect(200);
    assert_eq!(started.str("state"), "pending");
    let secret = started.str("secret").to_owned();
    let uri = started.str("otpauth_uri");
    assert!(uri.starts_with("otpauth://totp/Karen:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")) && uri.contains("issuer=Karen"));
    let confirmed = app
        .post(
            "/v1/auth/mfa/totp/confirm",
            token,
            json!({"code": current_code(app, &secret)}),
        )
        .await;
    confirmed.expect(200);
    let codes: Vec<String> = confirmed.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    app.clock.advance(STEP);
    (secret, codes)
}

/// A password login that must answer a challenge with `status`; returns it.
async fn challenge(app: &TestApp, tenant: &str, email: &str, status: &str) -> String {
    let reply = app.login(tenant, email, PASSWORD).await;
    reply.expect(200);
    assert_eq!(reply.str("status"), status, "{}", reply.text);
    assert!(reply.body.get("access_token").is_none(), "{}", reply.text);
    assert_eq!(reply.body["expires_in"], 300);
    let challenge = reply.str("challenge").to_owned();
    assert!(challenge.starts_with("krm_"));
    challenge
}

async fn second_step(app: &TestApp, challenge: &str, factor: Value) -> Reply {
    let mut body = factor;
    body["challenge"] = json!(challenge);
    app.call("POST", "/v1/auth/login/mfa", None, Some(body))
        .await
}

pub(crate) fn actions(reply: &Reply) -> Vec<(String, String, String)> {
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("action"), text("outcome"), text("target_id"))
        })
        .collect()
}

async fn settings(app: &TestApp, tenant: &TestTenant, policy: &str) -> Reply {
    app.patch(
        "/v1/tenant",
        &tenant.owner_token,
        json!({"settings": {"default_role": "member", "allowed_email_domains": [],
            "memory_extraction": true, "mfa_required": policy}}),
    )
    .await
}

async fn enrollment_and_two_step_login(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.clone();
    let status = app.get("/v1/auth/mfa", &token).await;
    assert_eq!(status.expect(200).str("totp"), "none");

    // A wrong first code does not activate; the pending state shows.
    let started = app.post("/v1/auth/mfa/totp", &token, json!({})).await;
    let pending_secret = started.expect(200).str("secret").to_owned();
    app.post(
        "/v1/auth/mfa/totp/confirm",
        &token,
        json!({"code": wrong_code(&app, &pending_secret)}),
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(app.get("/v1/auth/mfa", &token).await.str("totp"), "pending");
    // Starting again replaces the pending secret.
    let (secret, recovery) = enroll(&app, &token).await;
    assert_ne!(secret, pending_secret);
    assert_eq!(recovery.len(), 10);
    let status = app.get("/v1/auth/mfa", &token).await;
    assert_eq!(status.expect(200).str("totp"), "active");
    assert_eq!(status.body["recovery_codes_left"], 10);
    assert_eq!(status.body["required"], false);
    app.post("/v1/auth/mfa/totp", &token, json!({}))
        .await
        .expect_problem(409, "conflict");

    // The password alone earns a challenge only.
    let first = challenge(&app, "acme", &acme.owner_email, "mfa_required").await;
    let wrong = second_step(&app, &first, json!({"code": wrong_code(&app, &secret)})).await;
    wrong.expect_problem(401, "invalid_mfa_code");
    let code = current_code(&app, &secret);
    let done = second_step(&app, &first, json!({"code": code})).await;
    done.expect(200);
    assert!(done.body.get("recovery_codes").is_none());
    let session = done.str("access_token").to_owned();
    app.get("/v1/me", &session).await.expect(200);
    // The challenge worked once.
    second_step(&app, &first, json!({"code": code}))
        .await
        .expect_problem(401, "invalid_token");

    // The same code (same step) is refused on the next login; so is an older one.
    let second = challenge(&app, "acme", &acme.owner_email, "mfa_required").await;
    second_step(&app, &second, json!({"code": code}))
        .await
        .expect_problem(401, "invalid_mfa_code");
    let older = totp_code(&secret, app.clock.now() - time::Duration::seconds(30));
    second_step(&app, &second, json!({"code": older}))
        .await
        .expect_problem(401, "invalid_mfa_code");
    app.clock.advance(STEP);
    second_step(&app, &second, json!({"code": current_code(&app, &secret)}))
        .await
        .expect(200);

    // Neither or both factors is a client mistake; an expired challenge is dead.
    let third = challenge(&app, "acme", &acme.owner_email, "mfa_required").await;
    second_step(&app, &third, json!({}))
        .await
        .expect_problem(422, "validation_failed");
    second_step(
        &app,
        &third,
        json!({"code": "123456", "recovery_code": recovery[0]}),
    )
    .await
    .expect_problem(422, "validation_failed");
    app.clock.advance(Duration::from_secs(301));
    second_step(&app, &third, json!({"code": current_code(&app, &secret)}))
        .await
        .expect_problem(401, "invalid_token");

    // Removing needs a current code or the password; an API key cannot.
    let (_, key) = app
        .create_api_key(&token, json!({"name": "k", "scopes": ["chat:read"]}))
        .await;
    app.call(
        "DELETE",
        "/v1/auth/mfa/totp",
        Some(&key),
        Some(json!({"password": PASSWORD})),
    )
    .await
    .expect_problem(403, "forbidden");
    app.call(
        "DELETE",
        "/v1/auth/mfa/totp",
        Some(&token),
        Some(json!({"password": "not the password at all"})),
    )
    .await
    .expect_problem(422, "validation_failed");
    app.call(
        "DELETE",
        "/v1/auth/mfa/totp",
        Some(&token),
        Some(json!({"code": current_code(&app, &secret)})),
    )
    .await
    .expect(204);
    assert_eq!(app.get("/v1/auth/mfa", &token).await.str("totp"), "none");
    let plain = app.login("acme", &acme.owner_email, PASSWORD).await;
    assert!(plain.expect(200).body.get("access_token").is_some());
    app.stop().await;
}

async fn recovery_code_works_once(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, recovery) = enroll(&app, &acme.owner_token).await;
    let distinct: std::collections::BTreeSet<_> = recovery.iter().collect();
    assert_eq!(distinct.len(), 10);
    let first = challenge(&app, "acme", &acme.owner_email, "mfa_required").await;
    // Case and separators do not matter.
    let typed = recovery[3].to_uppercase().replace('-', " ");
    let done = second_step(&app, &first, json!({"recovery_code": typed})).await;
    let session = done.expect(200).str("access_token").to_owned();
    let status = app.get("/v1/auth/mfa", &session).await;
    assert_eq!(status.expect(200).body["recovery_codes_left"], 9);
    let again = challenge(&app, "acme", &acme.owner_email, "mfa_required").await;
    second_step(&app, &again, json!({"recovery_code": recovery[3]}))
        .await
        .expect_problem(401, "invalid_mfa_code");
    second_step(
        &app,
        &again,
        json!({"recovery_code": "aaaa-bbbb-cccc-dddd"}),
    )
    .await
    .expect_problem(401, "invalid_mfa_code");
    second_step(&app, &again, json!({"recovery_code": recovery[4]}))
        .await
        .expect(200);
    app.stop().await;
}

async fn challenge_token_grants_nothing(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (secret, _) = enroll(&app, &acme.owner_token).await;
    let pending = challenge(&app, "acme", &acme.owner_email, "mfa_required").await;
    // Every bearer-secured operation of the API refuses it, as does the
    // operator's API and the refresh exchange.
    let document = app.call("GET", "/openapi.json", None, None).await;
    let mut tried = 0;
    for (template, item) in document.body["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["security"]
                .as_array()
                .is_none_or(|s| s.is_empty())
            {
                continue;
            }
            let mut path = template.clone();
            while let (Some(open), Some(close)) = (path.find('{'), path.find('}')) {
                path.replace_range(open..=close, &uuid::Uuid::now_v7().to_string());
            }
            let reply = app
                .call(
                    &method.to_uppercase(),
                    &path,
                    Some(&pending),
                    Some(json!({})),
                )
                .await;
            assert!(
                reply.status == 401,
                "{method} {template} accepted an MFA challenge: {} {}",
                reply.status,
                reply.text
            );
            tried += 1;
        }
    }
    assert!(tried > 40, "only {tried} operations tried");
    app.call(
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": pending})),
    )
    .await
    .expect_problem(401, "invalid_token");
    // It still finishes its own login afterwards (the refusals spent nothing).
    second_step(&app, &pending, json!({"code": current_code(&app, &secret)}))
        .await
        .expect(200);
    app.stop().await;
}

async fn policy_admins_and_everyone(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, member_token) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;
    settings(&app, &acme, "sometimes")
        .await
        .expect_problem(422, "validation_failed");
    let tenant = settings(&app, &acme, "admins").await;
    assert_eq!(
        tenant.expect(200).body["settings"]["mfa_required"],
        "admins"
    );
    let member_status = app.get("/v1/auth/mfa", &member_token).await;
    assert_eq!(member_status.body["required"], false);

    // A member signs in with the password; the owner must enroll first.
    let member = app.login("acme", "member@acme.test", PASSWORD).await;
    assert!(member.expect(200).body.get("access_token").is_some());
    let owner = challenge(&app, "acme", &acme.owner_email, "mfa_enrollment_required").await;
    second_step(&app, &owner, json!({"code": "123456"}))
        .await
        .expect_problem(409, "conflict");
    second_step(
        &app,
        &owner,
        json!({"recovery_code": "aaaa-bbbb-cccc-dddd"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    let enrollment = app
        .call(
            "POST",
            "/v1/auth/login/mfa/enroll",
            None,
            Some(json!({"challenge": owner})),
        )
        .await;
    let secret = enrollment.expect(200).str("secret").to_owned();
    second_step(&app, &owner, json!({"code": wrong_code(&app, &secret)}))
        .await
        .expect_problem(401, "invalid_mfa_code");
    let done = second_step(&app, &owner, json!({"code": current_code(&app, &secret)})).await;
    done.expect(200);
    assert_eq!(done.body["recovery_codes"].as_array().unwrap().len(), 10);
    let owner_session = done.str("access_token").to_owned();
    let status = app.get("/v1/auth/mfa", &owner_session).await;
    assert_eq!(status.str("totp"), "active");
    assert_eq!(status.body["required"], true);
    // While required, the owner cannot remove it themselves.
    app.clock.advance(STEP);
    app.call(
        "DELETE",
        "/v1/auth/mfa/totp",
        Some(&owner_session),
        Some(json!({"password": PASSWORD})),
    )
    .await
    .expect_problem(403, "forbidden");
    // From now on the owner's login asks for the code; a verify challenge cannot enroll.
    let next = challenge(&app, "acme", &acme.owner_email, "mfa_required").await;
    app.call(
        "POST",
        "/v1/auth/login/mfa/enroll",
        None,
        Some(json!({"challenge": next})),
    )
    .await
    .expect_problem(409, "conflict");
    second_step(&app, &next, json!({"code": current_code(&app, &secret)}))
        .await
        .expect(200);

    // Everyone: the member is held back too.
    settings(&app, &acme, "everyone").await.expect(200);
    challenge(&app, "acme", "member@acme.test", "mfa_enrollment_required").await;
    settings(&app, &acme, "off").await.expect(200);
    let member = app.login("acme", "member@acme.test", PASSWORD).await;
    assert!(member.expect(200).body.get("access_token").is_some());
    app.stop().await;
}

async fn admin_reset_allowed_for_admin_denied_for_member_and_cross_tenant(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    let (member_id, member_token) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;
    let (_, colleague_token) = app
        .create_user(&acme, "colleague@acme.test", &["member"])
        .await;
    enroll(&app, &member_token).await;
    let path = format!("/v1/users/{member_id}/mfa");
    app.delete(&path, &colleague_token)
        .await
        .expect_problem(403, "permission_denied");
    app.delete(&path, &other.owner_token)
        .await
        .expect_problem(404, "not_found");
    app.delete(
        &format!("/v1/users/{}/mfa", uuid::Uuid::now_v7()),
        &acme.owner_token,
    )
    .await
    .expect_problem(404, "not_found");
    challenge(&app, "acme", "member@acme.test", "mfa_required").await;
    app.delete(&path, &acme.owner_token).await.expect(204);
    assert_eq!(
        app.get("/v1/auth/mfa", &member_token).await.str("totp"),
        "none"
    );
    let plain = app.login("acme", "member@acme.test", PASSWORD).await;
    assert!(plain.expect(200).body.get("access_token").is_some());
    let trail = app.get("/v1/audit?limit=200", &acme.owner_token).await;
    let events = actions(trail.expect(200));
    assert!(
        events.contains(&(
            "user.mfa.reset".into(),
            "success".into(),
            member_id.to_string()
        )),
        "{events:?}"
    );
    let others = app.get("/v1/audit?limit=200", &other.owner_token).await;
    assert!(!others.text.contains("user.mfa.reset"));
    app.stop().await;
}

async fn failed_codes_are_throttled_and_audited(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        c.auth.delay_after_failures = 2;
        c.auth.lockout_after_failures = 4;
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (secret, _) = enroll(&app, &acme.owner_token).await;
    let pending = challenge(&app, "acme", &acme.owner_email, "mfa_required").await;
    for _ in 0..2 {
        second_step(&app, &pending, json!({"code": wrong_code(&app, &secret)}))
            .await
            .expect_problem(401, "invalid_mfa_code");
    }
    // Now each attempt must wait, even with the right code.
    let early = second_step(&app, &pending, json!({"code": current_code(&app, &secret)})).await;
    early.expect_problem(429, "login_throttled");
    assert!(early.header("retry-after").is_some());
    app.clock.advance(Duration::from_secs(10));
    let fresh = challenge(&app, "acme", &acme.owner_email, "mfa_required").await;
    second_step(&app, &fresh, json!({"code": wrong_code(&app, &secret)}))
        .await
        .expect_problem(401, "invalid_mfa_code");
    app.clock.advance(Duration::from_secs(10));
    second_step(&app, &fresh, json!({"code": wrong_code(&app, &secret)}))
        .await
        .expect_problem(423, "account_locked");
    app.clock.advance(Duration::from_secs(10));
    second_step(&app, &fresh, json!({"code": current_code(&app, &secret)}))
        .await
        .expect_problem(423, "account_locked");

    // An administrator unlocks; the audit trail tells the story without secrets.
    app.post(
        &format!("/v1/users/{}/unlock", acme.owner_id),
        &acme.owner_token,
        json!({}),
    )
    .await
    .expect(200);
    // Guessing codes to remove the authenticator is held back the same way.
    for _ in 0..2 {
        let guess = json!({"code": wrong_code(&app, &secret)});
        app.call(
            "DELETE",
            "/v1/auth/mfa/totp",
            Some(&acme.owner_token),
            Some(guess),
        )
        .await
        .expect_problem(422, "validation_failed");
    }
    let guess = json!({"code": current_code(&app, &secret)});
    app.call(
        "DELETE",
        "/v1/auth/mfa/totp",
        Some(&acme.owner_token),
        Some(guess),
    )
    .await
    .expect_problem(429, "login_throttled");
    let trail = app.get("/v1/audit?limit=200", &acme.owner_token).await;
    let events = actions(trail.expect(200));
    let owner = acme.owner_id.to_string();
    for (action, outcome) in [
        ("auth.mfa.totp.start", "success"),
        ("auth.mfa.enable", "success"),
        ("auth.login.challenge", "success"),
        ("auth.mfa.failed", "failure"),
        ("auth.mfa.failed", "denied"),
        ("auth.mfa.disable.failed", "failure"),
    ] {
        assert!(
            events.contains(&(action.into(), outcome.into(), owner.clone())),
            "{action} {outcome} in {events:?}"
        );
    }
    assert!(!trail.text.contains(&secret), "the secret is not audited");
    app.stop().await;
}

async fn failed_codes_count_toward_the_address_limits(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        c.server.trusted_proxy_hops = 1;
        c.rate_limits.auth_ip = Some(karen_domain::rate_limit::Quota::new(5, 600).unwrap());
        c.auth.ip_max_failures = 2;
        c.auth.delay_after_failures = 10;
        c.auth.lockout_after_failures = 20;
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (secret, _) = enroll(&app, &acme.owner_token).await;
    let from = |ip: &'static str, path: &'static str, body: Value| app.post_from(ip, path, body);
    let password = json!({"tenant": "acme", "email": acme.owner_email, "password": PASSWORD});
    let login = from("203.0.113.7", "/v1/auth/login", password.clone()).await;
    let pending = login.expect(200).str("challenge").to_owned();
    for _ in 0..2 {
        let wrong = json!({"challenge": pending, "code": wrong_code(&app, &secret)});
        from("203.0.113.7", "/v1/auth/login/mfa", wrong)
            .await
            .expect_problem(401, "invalid_mfa_code");
    }
    // The address has failed enough: its password logins and codes wait.
    from("203.0.113.7", "/v1/auth/login", password.clone())
        .await
        .expect_problem(429, "login_throttled");
    let right = json!({"challenge": pending, "code": current_code(&app, &secret)});
    from("203.0.113.7", "/v1/auth/login/mfa", right.clone())
        .await
        .expect_problem(429, "login_throttled");
    // Five sign-in requests used the address's quota: the sixth is refused
    // before anything is looked at.
    from("203.0.113.7", "/v1/auth/login/mfa", right.clone())
        .await
        .expect_problem(429, "rate_limited");
    // The account itself is not held back: another address finishes the login.
    from("198.51.100.4", "/v1/auth/login/mfa", right)
        .await
        .expect(200);
    app.stop().await;
}

on_both_backends!(
    enrollment_and_two_step_login,
    recovery_code_works_once,
    challenge_token_grants_nothing,
    policy_admins_and_everyone,
    admin_reset_allowed_for_admin_denied_for_member_and_cross_tenant,
    failed_codes_are_throttled_and_audited,
    failed_codes_count_toward_the_address_limits,
);
