//! Each credential for its own purpose (ASVS 9.2.2, 9.2.3): a refresh token,
//! an API key, an access token and an operator key presented as one another
//! are all refused, and an access token signed with Karen's own signing key
//! but issued for another audience or by another issuer is refused.

use std::sync::Arc;
use std::time::Duration;

use karen_crypto::{JwtConfig, JwtTokens};
use karen_domain::clock::Clock;
use karen_domain::ports::{AccessClaims, AccessTokens, Store};
use karen_domain::{SessionId, TenantId, UserId};
use karen_testkit::{Backend, PASSWORD, TestApp, spawn};
use serde_json::json;

use crate::auth::refresh;

async fn credentials_presented_as_another_kind_are_refused(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, api_key) = app
        .create_api_key(&acme.owner_token, json!({"name": "k"}))
        .await;
    let access = acme.owner_token.as_str();
    let refresh_token = acme.owner_refresh.as_str();
    let operator = app.operator_key.as_str();

    // Bearer on a tenant route: a refresh token, an operator key.
    for credential in [refresh_token, operator] {
        app.get("/v1/me", credential)
            .await
            .expect_problem(401, "invalid_token");
    }
    // Refresh: an access token, an API key, an operator key.
    for credential in [access, api_key.as_str(), operator] {
        refresh(&app, credential)
            .await
            .expect_problem(401, "invalid_token");
    }
    // Operator routes: an access token, an API key, a refresh token.
    for credential in [access, api_key.as_str(), refresh_token] {
        app.get("/v1/platform/tenants", credential)
            .await
            .expect_problem(401, "invalid_token");
    }
    // Each still works for its own purpose (the refusals were about the kind).
    app.get("/v1/me", access).await.expect(200);
    app.get("/v1/me", &api_key).await.expect(200);
    app.get("/v1/platform/tenants", operator).await.expect(200);
    refresh(&app, refresh_token).await.expect(200);
    app.stop().await;
}

/// Signs access tokens with the running server's own keys (read from its
/// store) under the given issuer and audience.
async fn minter(app: &TestApp, issuer: &str, audience: &str) -> JwtTokens {
    let store: Arc<dyn Store> = app.karen.store.clone();
    JwtTokens::new(
        store,
        app.clock.clone(),
        JwtConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            ttl: Duration::from_secs(900),
        },
    )
    .await
    .unwrap()
}

async fn tokens_for_another_audience_or_issuer_are_refused(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let login = app.login("acme", &acme.owner_email, PASSWORD).await;
    let session = login.expect(200).uuid("/session_id");
    let now = app.clock.now();
    let claims = AccessClaims {
        tenant_id: TenantId::from_uuid(acme.id),
        user_id: UserId::from_uuid(acme.owner_id),
        session_id: SessionId::from_uuid(session),
        issued_at: now,
        expires_at: now + Duration::from_secs(600),
    };
    let issuer = app.config.auth.issuer.clone();
    // The control: Karen's own issuer and audience are accepted, so the key is real.
    let genuine = minter(&app, &issuer, &issuer)
        .await
        .issue(&claims)
        .await
        .unwrap();
    app.get("/v1/me", &genuine).await.expect(200);
    for (iss, aud) in [
        (issuer.as_str(), "another-service"),
        ("https://idp.example", issuer.as_str()),
    ] {
        let foreign = minter(&app, iss, aud).await.issue(&claims).await.unwrap();
        let (header, _) = foreign.split_once('.').unwrap();
        let (genuine_header, _) = genuine.split_once('.').unwrap();
        assert_eq!(header, genuine_header, "signed with the same key");
        app.get("/v1/me", &foreign)
            .await
            .expect_problem(401, "invalid_token");
    }
    app.stop().await;
}

on_both_backends!(
    credentials_presented_as_another_kind_are_refused,
    tokens_for_another_audience_or_issuer_are_refused,
);
