//! Sessions (ASVS 7.1.1, 7.3.1, 7.3.2, 7.5.2): an unused session ends after
//! `auth.session_idle_timeout_hours`, every session ends `auth.session_ttl_days`
//! after its login however busy, and users list and end their own sessions
//! (never another user's or another tenant's).

use std::time::Duration;

use karen_testkit::{Backend, PASSWORD, Reply, TestApp, spawn};
use serde_json::{Value, json};

use crate::auth::refresh;

const HOUR: Duration = Duration::from_secs(3600);

/// `(session id, access token, refresh token)` of a new login.
async fn login(app: &TestApp, tenant: &str, email: &str) -> (String, String, String) {
    let reply = app.login(tenant, email, PASSWORD).await;
    reply.expect(200);
    (
        reply.str("session_id").to_owned(),
        reply.str("access_token").to_owned(),
        reply.str("refresh_token").to_owned(),
    )
}

fn sessions(reply: &Reply) -> Vec<Value> {
    reply.expect(200).body["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no sessions in {}", reply.text))
        .clone()
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `(action, outcome, target id)` of the tenant's audit events.
async fn audit_events(app: &TestApp, token: &str) -> Vec<(String, String, String)> {
    let trail = app.get("/v1/audit?limit=200", token).await;
    crate::mfa::actions(trail.expect(200))
}

async fn idle_sessions_end_and_every_session_ends_at_its_maximum(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (idle_session, _, mut refresh_token) = login(&app, "acme", &acme.owner_email).await;
    // Used within the idle timeout (72 hours by default), a session lasts
    // well past it.
    for _ in 0..3 {
        app.clock.advance(71 * HOUR);
        let reply = refresh(&app, &refresh_token).await;
        refresh_token = reply.expect(200).str("refresh_token").to_owned();
    }
    // Unused for longer, it is refused and ended.
    app.clock.advance(72 * HOUR + Duration::from_secs(60));
    refresh(&app, &refresh_token)
        .await
        .expect_problem(401, "invalid_token");
    let (busy_session, token, mut refresh_token) = login(&app, "acme", &acme.owner_email).await;
    let listed = sessions(&app.get("/v1/auth/sessions", &token).await);
    assert_eq!(ids(&listed), vec![busy_session.clone()], "{listed:?}");
    let events = audit_events(&app, &token).await;
    assert!(
        events.contains(&(
            "auth.session.idle_timeout".into(),
            "denied".into(),
            idle_session.clone()
        )),
        "{events:?}"
    );
    // Each successful exchange is an audit event of its session.
    let refreshed = (
        "auth.refresh".into(),
        "success".into(),
        idle_session.clone(),
    );
    assert_eq!(
        events.iter().filter(|e| **e == refreshed).count(),
        3,
        "{events:?}"
    );

    // However busy, a session ends 30 days (`session_ttl_days`) after its login.
    let created = listed[0]["created_at"].as_str().unwrap().to_owned();
    let expires = listed[0]["expires_at"].as_str().unwrap().to_owned();
    let parse = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert_eq!(parse(&expires) - parse(&created), time::Duration::days(30));
    for _ in 0..10 {
        app.clock.advance(70 * HOUR);
        let reply = refresh(&app, &refresh_token).await;
        refresh_token = reply.expect(200).str("refresh_token").to_owned();
    }
    app.clock.advance(19 * HOUR);
    let reply = refresh(&app, &refresh_token).await;
    refresh_token = reply.expect(200).str("refresh_token").to_owned();
    app.clock.advance(2 * HOUR);
    refresh(&app, &refresh_token)
        .await
        .expect_problem(401, "invalid_token");
    app.stop().await;
}

async fn sessions_are_listed_and_ended_by_their_own_user(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    let (first, first_token, _) = login(&app, "acme", &acme.owner_email).await;
    let (second, _, second_refresh) = login(&app, "acme", &acme.owner_email).await;

    // Three sessions (the test kit's login and these two), newest first,
    // the caller's marked current.
    let listed = sessions(&app.get("/v1/auth/sessions", &first_token).await);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(ids(&listed)[..2], [second.clone(), first.clone()]);
    for session in &listed {
        let current = session["id"] == first.as_str();
        assert_eq!(session["current"], current, "{session}");
        for field in ["created_at", "last_used_at", "expires_at"] {
            assert!(session[field].is_string(), "{field}: {session}");
        }
        assert!(session.get("ip").is_some() && session.get("user_agent").is_some());
        assert_eq!(session["created_at"], session["last_used_at"]);
    }
    // Using a session moves its last use (within the access tokens' 15 minutes).
    app.clock.advance(Duration::from_secs(120));
    let reply = refresh(&app, &second_refresh).await;
    let second_token = reply.expect(200).str("access_token").to_owned();
    let second_refresh = reply.str("refresh_token").to_owned();
    let listed = sessions(&app.get("/v1/auth/sessions", &second_token).await);
    let entry = listed.iter().find(|s| s["id"] == second.as_str()).unwrap();
    assert_ne!(entry["created_at"], entry["last_used_at"]);
    assert_eq!(entry["current"], true);

    // Ending another of one's sessions ends its access and refresh tokens.
    let path = |id: &str| format!("/v1/auth/sessions/{id}");
    app.delete(&path(&second), &first_token).await.expect(204);
    app.get("/v1/me", &second_token)
        .await
        .expect_problem(401, "invalid_token");
    refresh(&app, &second_refresh)
        .await
        .expect_problem(401, "invalid_token");
    let listed = sessions(&app.get("/v1/auth/sessions", &first_token).await);
    assert!(!ids(&listed).contains(&second), "{listed:?}");
    app.delete(&path(&second), &first_token)
        .await
        .expect_problem(404, "not_found");
    app.delete(&path("not-a-session"), &first_token)
        .await
        .expect_problem(400, "bad_request");

    // Another user's session, in the same tenant or another, is not found
    // and keeps working.
    app.create_user(&acme, "member@acme.test", &["member"])
        .await;
    let (member_session, member_token, _) = login(&app, "acme", "member@acme.test").await;
    let (other_session, other_token, _) = login(&app, "other", &other.owner_email).await;
    for (session, token) in [
        (&member_session, &member_token),
        (&other_session, &other_token),
    ] {
        let reply = app.delete(&path(session), &first_token).await;
        reply.expect_problem(404, "not_found");
        app.get("/v1/me", token).await.expect(200);
    }
    let owner_ids = ids(&sessions(&app.get("/v1/auth/sessions", &first_token).await));
    let member_ids = ids(&sessions(
        &app.get("/v1/auth/sessions", &member_token).await,
    ));
    assert!(member_ids.contains(&member_session));
    assert!(
        member_ids.iter().all(|id| !owner_ids.contains(id)),
        "another user's sessions listed"
    );
    assert!(!owner_ids.contains(&other_session));
    // The member cannot end the owner's session either.
    app.delete(&path(&first), &member_token)
        .await
        .expect_problem(404, "not_found");

    // An API key lists its owner's sessions, none of them current.
    let (_, key) = app
        .create_api_key(&first_token, json!({"name": "sessions"}))
        .await;
    let listed = sessions(&app.get("/v1/auth/sessions", &key).await);
    assert_eq!(ids(&listed), owner_ids);
    assert!(listed.iter().all(|s| s["current"] == false));

    // Ending the current session is a logout.
    app.delete(&path(&first), &first_token).await.expect(204);
    app.get("/v1/me", &first_token)
        .await
        .expect_problem(401, "invalid_token");
    // A refresh token presented twice ends its session, recorded as a reuse.
    let (reused, _, spent) = login(&app, "acme", &acme.owner_email).await;
    refresh(&app, &spent).await.expect(200);
    refresh(&app, &spent)
        .await
        .expect_problem(401, "invalid_token");
    let (_, auditor, _) = login(&app, "acme", &acme.owner_email).await;
    let events = audit_events(&app, &auditor).await;
    for ended in [&second, &first] {
        assert!(
            events.contains(&("auth.session.end".into(), "success".into(), ended.clone())),
            "{events:?}"
        );
    }
    assert!(
        events.contains(&("auth.refresh.reused".into(), "denied".into(), reused)),
        "{events:?}"
    );
    app.stop().await;
}

on_both_backends!(
    idle_sessions_end_and_every_session_ends_at_its_maximum,
    sessions_are_listed_and_ended_by_their_own_user,
);
