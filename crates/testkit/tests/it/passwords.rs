//! The password policy wherever a password is set (ASVS 6.1.2, 6.2.4, 6.2.9,
//! 6.2.11, 6.2.12): the 3000 most common (breached) passwords and words of
//! the account's context are refused with a problem naming the field, and
//! long passwords are accepted and sign in. Also: changing one's own email
//! needs the current password (7.5.1).

use karen_testkit::{Backend, PASSWORD, Reply, TestApp, spawn_with};
use serde_json::{Value, json};

/// Fails unless `reply` refuses the password of `field` for `reason`,
/// without repeating the password.
#[track_caller]
fn refused(reply: &Reply, field: &str, reason: &str, password: &str) {
    reply.expect_problem(422, "validation_failed");
    assert_eq!(reply.body["field"], field, "{}", reply.text);
    let detail = reply.str("detail");
    assert!(detail.contains(reason), "{reason:?} not in {detail:?}");
    assert!(
        !reply.text.to_lowercase().contains(&password.to_lowercase()),
        "the password is echoed: {}",
        reply.text
    );
}

const COMMON: &str = "3000 most common";

async fn operator_creates(app: &TestApp, slug: &str, email: &str, password: &str) -> Reply {
    app.post(
        "/v1/platform/tenants",
        &app.operator_key,
        json!({"slug": slug, "name": "Globex Corporation", "owner_email": email,
            "owner_password": password}),
    )
    .await
}

async fn weak_passwords_are_refused_wherever_a_password_is_set(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| c.features.self_signup = true).await else {
        return;
    };
    // The operator creating a tenant and its owner.
    let email = "marguerite@globex.test";
    for (password, reason) in [
        ("qwerty123456", COMMON),
        ("QwErTy123456", COMMON),
        ("Password1234", COMMON),
        ("1qaz2wsx3edc", COMMON),
        ("leavemealone", COMMON),
        ("karen keeps my secrets", "Karen"),
        ("i love working at GLOBEX", "slug"),
        ("a corporation of one person", "organisation's name"),
        ("marguerite's secret garden", "before the @"),
    ] {
        let reply = operator_creates(&app, "globex", email, password).await;
        refused(&reply, "owner_password", reason, password);
    }
    operator_creates(&app, "globex", email, PASSWORD)
        .await
        .expect(201);

    // Self-service signup.
    let signup = |password: &str| {
        json!({"tenant_slug": "initech", "tenant_name": "Initech Systems",
            "email": "peter.gibbons@initech.test", "password": password})
    };
    for (password, reason) in [
        ("1q2w3e4r5t6y", COMMON),
        ("all systems go, captain", "organisation's name"),
        ("peter piper picked peppers", "before the @"),
        ("gibbons swing through trees", "before the @"),
    ] {
        let reply = app
            .call("POST", "/v1/signup", None, Some(signup(password)))
            .await;
        refused(&reply, "password", reason, password);
    }
    app.call("POST", "/v1/signup", None, Some(signup(PASSWORD)))
        .await
        .expect(201);

    // An administrator creating a user.
    let owner = app.token("globex", email, PASSWORD).await;
    let create = |email: &str, password: &str| json!({"email": email, "password": password});
    for (email, password, reason) in [
        ("sam@globex.test", "123456qwerty", COMMON),
        ("sam@globex.test", "Karen is a fine name", "Karen"),
        (
            "samantha.jones@globex.test",
            "keeping up with the jones",
            "before the @",
        ),
        ("sam@hooli.example", "hooli rules the valley", "domain"),
        ("sam@globex.test", "globex for ever and ever", "slug"),
    ] {
        let reply = app.post("/v1/users", &owner, create(email, password)).await;
        refused(&reply, "password", reason, password);
    }
    let users = app.get("/v1/users", &owner).await;
    assert_eq!(users.expect(200).item_ids().len(), 1, "nothing was created");
    app.post(
        "/v1/users",
        &owner,
        create("samantha.jones@hooli.example", PASSWORD),
    )
    .await
    .expect(201);

    // A user changing their own password.
    let member = app
        .token("globex", "samantha.jones@hooli.example", PASSWORD)
        .await;
    let change = |new: &str| json!({"current_password": PASSWORD, "new_password": new});
    for (password, reason) in [
        ("qazwsxedcrfv", COMMON),
        ("hooli forever and always", "domain"),
        ("the globex way of life", "slug"),
        ("samantha's secret phrase", "before the @"),
    ] {
        let reply = app.post("/v1/me/password", &member, change(password)).await;
        refused(&reply, "new_password", reason, password);
    }
    app.post(
        "/v1/me/password",
        &member,
        change("velvet thunder under glass"),
    )
    .await
    .expect(204);
    app.login(
        "globex",
        "samantha.jones@hooli.example",
        "velvet thunder under glass",
    )
    .await
    .expect(200);
    app.stop().await;
}

async fn long_passwords_are_accepted_and_sign_in(backend: Backend) {
    let Some(app) = spawn_with(backend, |_| {}).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let phrase = |chars: usize| -> String {
        "Tr0ub4dor & 3 quiet otters drift past the lighthouse; "
            .chars()
            .cycle()
            .take(chars)
            .collect()
    };
    for (email, chars) in [("sixtyfour@acme.test", 64), ("twohundred@acme.test", 200)] {
        let password = phrase(chars);
        assert_eq!(password.chars().count(), chars);
        app.post(
            "/v1/users",
            &acme.owner_token,
            json!({"email": email, "password": password}),
        )
        .await
        .expect(201);
        let login = app.login("acme", email, &password).await;
        login.expect(200);
        // One character short is a wrong password: nothing is truncated.
        app.login("acme", email, &password[..chars - 1])
            .await
            .expect_problem(401, "invalid_credentials");
        // And a long password can be changed to another long one.
        let token = login.str("access_token").to_owned();
        let longer = format!("{}!", phrase(255));
        app.post(
            "/v1/me/password",
            &token,
            json!({"current_password": password, "new_password": longer}),
        )
        .await
        .expect(204);
        app.login("acme", email, &longer).await.expect(200);
    }
    app.stop().await;
}

/// ASVS 6.2.5 and 6.2.8: no composition rule (only lowercase letters and
/// spaces, or any Unicode), and a password is checked exactly as it was set:
/// not trimmed, not case-folded, not normalised.
async fn any_composition_is_allowed_and_checked_exactly_as_given(backend: Backend) {
    let Some(app) = spawn_with(backend, |_| {}).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    for (n, password) in [
        "lowercase words only here",
        "  spaces around it, kept  ",
        "ünïcödé ☂ paßwört über alles",
        "0123456789012345678901",
    ]
    .into_iter()
    .enumerate()
    {
        let email = format!("composer{n}@acme.test");
        app.post(
            "/v1/users",
            &acme.owner_token,
            json!({"email": email, "password": password}),
        )
        .await
        .expect(201);
        app.login("acme", &email, password).await.expect(200);
        let variants = [
            password.trim().to_owned(),
            password.to_uppercase(),
            format!("{password} "),
        ];
        for variant in variants.iter().filter(|v| v.as_str() != password) {
            app.login("acme", &email, variant)
                .await
                .expect_problem(401, "invalid_credentials");
        }
    }
    // A decomposed "ü" (u + combining diaeresis) is another password than
    // the composed one it was set as.
    let composed = "ünïcödé ☂ paßwört über alles";
    let decomposed = composed.replace('ü', "u\u{308}");
    app.login("acme", "composer2@acme.test", &decomposed)
        .await
        .expect_problem(401, "invalid_credentials");
    app.stop().await;
}

async fn changing_your_own_email_needs_your_current_password(backend: Backend) {
    let Some(app) = spawn_with(backend, |_| {}).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let me = format!("/v1/users/{}", acme.owner_id);
    let change = |extra: Value| {
        let mut body = json!({"email": "boss@acme.test"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let reply = app.patch(&me, &acme.owner_token, change(json!({}))).await;
    reply.expect_problem(422, "validation_failed");
    assert_eq!(reply.body["field"], "current_password", "{}", reply.text);
    let wrong = json!({"current_password": "not my password at all"});
    let reply = app.patch(&me, &acme.owner_token, change(wrong)).await;
    reply.expect_problem(422, "validation_failed");
    assert_eq!(reply.body["field"], "current_password");
    let owner = app.get(&me, &acme.owner_token).await;
    assert_eq!(owner.expect(200).str("email"), acme.owner_email);
    // The display name is not a sign-in attribute: no password needed.
    app.patch(&me, &acme.owner_token, json!({"display_name": "The Boss"}))
        .await
        .expect(200);
    let right = json!({"current_password": PASSWORD});
    app.patch(&me, &acme.owner_token, change(right))
        .await
        .expect(200);
    app.login("acme", "boss@acme.test", PASSWORD)
        .await
        .expect(200);
    // An administrator changing someone else's email proves nothing more.
    let (member, _) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;
    app.patch(
        &format!("/v1/users/{member}"),
        &acme.owner_token,
        json!({"email": "member2@acme.test"}),
    )
    .await
    .expect(200);
    app.stop().await;
}

on_both_backends!(
    any_composition_is_allowed_and_checked_exactly_as_given,
    weak_passwords_are_refused_wherever_a_password_is_set,
    long_passwords_are_accepted_and_sign_in,
    changing_your_own_email_needs_your_current_password,
);
