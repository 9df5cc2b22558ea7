//! Single sign-on with SAML 2.0 against the testkit's IdP (responses signed
//! with its RSA key): a whole login over HTTP in both bindings with a
//! just-in-time account and mapped roles; every bad response of the issue
//! refused at the ACS (unsigned, another key, signature wrapping, altered
//! after signing, expired, wrong audience, destination or InResponseTo, a
//! replayed assertion); comments inside the NameID; one tenant's response
//! refused at another; configuration RBAC and bad metadata; "SSO required".

use std::time::Duration;

use karen_domain::clock::Clock as _;
use karen_testkit::saml_idp::{
    ReceivedRequest, SAML_IDP_ENTITY, SAML_IDP_KEY, SAML_IDP_SSO_POST, SAML_IDP_SSO_REDIRECT,
    SamlTamper, SamlUser, saml_idp_metadata, saml_response,
};
use karen_testkit::{Backend, Reply, TestApp, TestTenant, spawn};
use serde_json::{Value, json};

use crate::sso::shared::{
    browser, expect_audited, expect_refused, expect_signed_in, get,
    only_tenant_managers_may_configure, redirected_to, required_sso_scenario,
    unknown_and_unconfigured_organisations_look_alike,
};

pub(crate) const SAML_CONNECTION: &str = "/v1/tenant/sso/saml";

pub(crate) fn saml_connection_body() -> Value {
    json!({
        "idp_metadata": saml_idp_metadata(),
        "role_mapping": {"claim": "groups",
            "values": {"engineering": "member", "it-admins": "admin"}, "default_role": null},
    })
}

async fn setup(backend: Backend) -> Option<(TestApp, TestTenant)> {
    let app = spawn(backend).await?;
    let acme = app.create_tenant("acme").await;
    app.put(SAML_CONNECTION, &acme.owner_token, saml_connection_body())
        .await
        .expect(200);
    Some((app, acme))
}

/// `GET /v1/auth/sso/saml/start` with the HTTP-Redirect binding: the request
/// the browser brings to the IdP.
async fn start(app: &TestApp, slug: &str) -> ReceivedRequest {
    let location = redirected_to(&format!(
        "{}/v1/auth/sso/saml/start?tenant={slug}",
        app.base_url
    ))
    .await;
    assert!(location.starts_with(SAML_IDP_SSO_REDIRECT), "{location}");
    ReceivedRequest::from_redirect(&location)
}

/// Posts the IdP's answer to the ACS as the browser would.
async fn acs(app: &TestApp, relay_state: &str, response: &str) -> Reply {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("SAMLResponse", response)
        .append_pair("RelayState", relay_state)
        .finish();
    post_acs(app, "application/x-www-form-urlencoded", body).await
}

async fn post_acs(app: &TestApp, content_type: &str, body: String) -> Reply {
    let response = browser()
        .post(format!("{}/v1/auth/sso/saml/acs", app.base_url))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    Reply::read_response(response).await
}

/// A whole login: start, the IdP answers for `user` as `tamper` says, ACS.
async fn saml_login(app: &TestApp, slug: &str, user: &SamlUser, tamper: &SamlTamper) -> Reply {
    let request = start(app, slug).await;
    let response = saml_response(&request, user, tamper, app.clock.now());
    acs(app, &request.relay_state, &response).await
}

fn alice() -> SamlUser {
    SamlUser::new("alice@acme.test", &["engineering"])
}

async fn saml_login_creates_the_user_with_mapped_roles_in_both_bindings(backend: Backend) {
    let Some((app, acme)) = setup(backend).await else {
        return;
    };
    let shown = app.get(SAML_CONNECTION, &acme.owner_token).await;
    shown.expect(200);
    assert_eq!(shown.str("idp_entity_id"), SAML_IDP_ENTITY);
    assert_eq!(shown.str("sso_redirect_url"), SAML_IDP_SSO_REDIRECT);
    assert_eq!(shown.str("binding"), "redirect");
    assert_eq!(shown.body["signing_certificates"], 1);

    // The SP metadata names the tenant's entity ID and the ACS URL.
    let metadata = get(&format!("{}/v1/auth/sso/saml/acme/metadata", app.base_url)).await;
    metadata.expect(200);
    assert!(
        metadata
            .header("content-type")
            .unwrap()
            .starts_with("application/samlmetadata+xml")
    );
    let entity_id = format!("{}/v1/auth/sso/saml/acme/metadata", app.base_url);
    let acs_url = format!("{}/v1/auth/sso/saml/acs", app.base_url);
    assert!(metadata.text.contains(&format!("entityID=\"{entity_id}\"")));
    assert!(metadata.text.contains(&format!("Location=\"{acs_url}\"")));

    // HTTP-Redirect: the request names our entity ID and ACS URL.
    let request = start(&app, "acme").await;
    assert_eq!(request.sp_entity_id, entity_id);
    assert_eq!(request.acs_url, acs_url);
    assert!(request.relay_state.starts_with("krq_") && request.relay_state.len() <= 80);
    let response = saml_response(&request, &alice(), &SamlTamper::None, app.clock.now());
    // The refresh token works like a password login's.
    let first = acs(&app, &request.relay_state, &response).await;
    let user_id = expect_signed_in(&app, &first, "alice@acme.test", json!(["member"])).await;

    // HTTP-POST binding, asked for: an auto-submitting form whose script
    // alone may run and which may post only to the IdP. Response-level
    // signature this time; the groups now map to two roles.
    let page = get(&format!(
        "{}/v1/auth/sso/saml/start?tenant=acme&binding=post",
        app.base_url
    ))
    .await;
    page.expect(200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'nonce-"), "{csp}");
    assert!(csp.contains("form-action https://idp.saml.test"), "{csp}");
    assert!(page.text.contains(SAML_IDP_SSO_POST));
    let request = ReceivedRequest::from_post_form(&page.text);
    let user = SamlUser::new("alice@acme.test", &["engineering", "it-admins"]);
    let response = saml_response(&request, &user, &SamlTamper::SignResponse, app.clock.now());
    let second = acs(&app, &request.relay_state, &response).await;
    second.expect(200);
    let me = app.get("/v1/me", second.str("access_token")).await;
    assert_eq!(me.str("user_id"), user_id, "matched by NameID");
    assert_eq!(me.body["roles"], json!(["admin", "member"]));

    // The RelayState is no credential anywhere else.
    app.get("/v1/me", &request.relay_state)
        .await
        .expect_problem(401, "invalid_token");

    // Groups that map to nothing are refused (no default role).
    let nobody = SamlUser::new("bob@acme.test", &["marketing"]);
    expect_refused(
        &saml_login(&app, "acme", &nobody, &SamlTamper::None).await,
        "no_role",
    );

    let trail = app.get("/v1/audit?limit=200", &acme.owner_token).await;
    trail.expect(200);
    expect_audited(
        &trail,
        &[
            ("sso.connection.create", "success"),
            ("auth.sso.start", "success"),
            ("auth.sso.login", "success"),
            ("user.create", "success"),
            ("user.roles.sync", "success"),
            ("auth.sso.login.failed", "failure"),
        ],
    );
    assert!(trail.text.contains("\"saml\""));
    app.stop().await;
}

async fn every_bad_saml_response_is_refused(backend: Backend) {
    let Some((app, acme)) = setup(backend).await else {
        return;
    };
    let (admin_id, _) = app.create_user(&acme, "admin@acme.test", &["admin"]).await;
    for (tamper, reason) in [
        (SamlTamper::Unsigned, "unsigned"),
        (SamlTamper::RogueKey, "signature"),
        (
            SamlTamper::WrapInExtensions("admin@acme.test".into()),
            "malformed",
        ),
        (
            SamlTamper::WrapBeside("admin@acme.test".into()),
            "malformed",
        ),
        (
            SamlTamper::AlterAfterSigning("admin@acme.test".into()),
            "signature",
        ),
        (SamlTamper::Expired(time::Duration::minutes(10)), "expired"),
        (
            SamlTamper::Audience("https://evil.test/sp".into()),
            "audience",
        ),
        (
            SamlTamper::InResponseTo("_not_this_request".into()),
            "in_response_to",
        ),
        (
            SamlTamper::Destination("https://evil.test/acs".into()),
            "destination",
        ),
    ] {
        let reply = saml_login(&app, "acme", &alice(), &tamper).await;
        expect_refused(&reply, reason);
    }

    // A comment inside the NameID does not cut the identity short: the
    // signed text is the whole address, and that is who signs in (a new
    // account, not the existing admin@acme.test).
    let split = SamlUser::new("admin@acme.test<!---->.evil.test", &["engineering"]);
    let reply = saml_login(&app, "acme", &split, &SamlTamper::None).await;
    reply.expect(200);
    let me = app.get("/v1/me", reply.str("access_token")).await;
    assert_eq!(me.str("email"), "admin@acme.test.evil.test");
    assert_ne!(me.str("user_id"), admin_id.to_string());
    assert_eq!(me.body["roles"], json!(["member"]));

    // The same IdP, untampered, signs in.
    saml_login(&app, "acme", &alice(), &SamlTamper::None)
        .await
        .expect(200);
    let trail = app.get("/v1/audit?limit=200", &acme.owner_token).await;
    for reason in ["unsigned", "malformed", "in_response_to", "destination"] {
        assert!(trail.expect(200).text.contains(reason), "{reason} audited");
    }
    app.stop().await;
}

async fn relay_state_and_replay_cache_make_responses_single_use(backend: Backend) {
    let Some((app, _acme)) = setup(backend).await else {
        return;
    };
    // The same response posted twice: the second post is refused.
    let request = start(&app, "acme").await;
    let response = saml_response(&request, &alice(), &SamlTamper::None, app.clock.now());
    acs(&app, &request.relay_state, &response).await.expect(200);
    expect_refused(&acs(&app, &request.relay_state, &response).await, "state");

    // An assertion ID seen before is refused even in an answer to a new request.
    let first = start(&app, "acme").await;
    let reused = SamlTamper::AssertionId("_assertion_used_once".into());
    let response = saml_response(&first, &alice(), &reused, app.clock.now());
    acs(&app, &first.relay_state, &response).await.expect(200);
    let second = start(&app, "acme").await;
    let response = saml_response(&second, &alice(), &reused, app.clock.now());
    expect_refused(&acs(&app, &second.relay_state, &response).await, "replay");

    // An answer to one request posted with another login's RelayState.
    let one = start(&app, "acme").await;
    let other = start(&app, "acme").await;
    let response = saml_response(&one, &alice(), &SamlTamper::None, app.clock.now());
    expect_refused(
        &acs(&app, &other.relay_state, &response).await,
        "in_response_to",
    );
    // Unknown, forged or missing RelayState.
    let response = saml_response(&one, &alice(), &SamlTamper::None, app.clock.now());
    for bad in [
        "",
        "nonsense",
        "krq_AAAA",
        &format!("krq_{}", "A".repeat(66)),
    ] {
        expect_refused(&acs(&app, bad, &response).await, "state");
    }
    // A login past its lifetime.
    let late = start(&app, "acme").await;
    app.clock.advance(Duration::from_secs(11 * 60));
    let response = saml_response(&late, &alice(), &SamlTamper::None, app.clock.now());
    expect_refused(&acs(&app, &late.relay_state, &response).await, "state");

    // Bad input is a 4xx problem, never a 500.
    post_acs(&app, "application/json", "{}".into())
        .await
        .expect_problem(415, "unsupported_media_type");
    post_acs(
        &app,
        "application/x-www-form-urlencoded",
        "RelayState=x".into(),
    )
    .await
    .expect_problem(400, "bad_request");
    let fresh = start(&app, "acme").await;
    expect_refused(
        &acs(&app, &fresh.relay_state, "not base64 at all!").await,
        "malformed",
    );
    get(&format!("{}/v1/auth/sso/saml/start", app.base_url))
        .await
        .expect_problem(400, "bad_request");
    get(&format!(
        "{}/v1/auth/sso/saml/start?tenant=acme&binding=carrier-pigeon",
        app.base_url
    ))
    .await
    .expect_problem(400, "bad_request");
    // An organisation without SAML and one that does not exist look the same.
    unknown_and_unconfigured_organisations_look_alike(&app, "/v1/auth/sso/saml/start").await;
    get(&format!(
        "{}/v1/auth/sso/saml/NOT%20A%20SLUG/metadata",
        app.base_url
    ))
    .await
    .expect_problem(404, "not_found");
    app.stop().await;
}

async fn one_tenants_response_is_refused_at_another(backend: Backend) {
    let Some((app, acme)) = setup(backend).await else {
        return;
    };
    // Both organisations trust the same IdP.
    let beta = app.create_tenant("beta").await;
    app.get(SAML_CONNECTION, &beta.owner_token)
        .await
        .expect_problem(404, "not_found");
    let beta_view = app
        .put(SAML_CONNECTION, &beta.owner_token, saml_connection_body())
        .await;
    beta_view.expect(200);
    let acme_view = app.get(SAML_CONNECTION, &acme.owner_token).await;
    assert_ne!(acme_view.expect(200).str("id"), beta_view.str("id"));

    // acme's answer (acme's audience) with beta's request and RelayState.
    let at_acme = start(&app, "acme").await;
    let at_beta = start(&app, "beta").await;
    let mut forged = at_beta.clone();
    forged.sp_entity_id = at_acme.sp_entity_id.clone();
    let response = saml_response(&forged, &alice(), &SamlTamper::None, app.clock.now());
    expect_refused(
        &acs(&app, &at_beta.relay_state, &response).await,
        "audience",
    );
    // acme's genuine answer posted with (another) beta RelayState.
    let at_beta = start(&app, "beta").await;
    let response = saml_response(&at_acme, &alice(), &SamlTamper::None, app.clock.now());
    expect_refused(
        &acs(&app, &at_beta.relay_state, &response).await,
        "in_response_to",
    );
    // …which does not spend acme's login: it still works at acme.
    acs(&app, &at_acme.relay_state, &response).await.expect(200);

    // beta's configuration changes never touch acme's.
    app.delete(SAML_CONNECTION, &beta.owner_token)
        .await
        .expect(204);
    app.get(SAML_CONNECTION, &beta.owner_token)
        .await
        .expect_problem(404, "not_found");
    let still = app.get(SAML_CONNECTION, &acme.owner_token).await;
    assert_eq!(still.expect(200).str("id"), acme_view.str("id"));
    app.stop().await;
}

async fn only_tenant_managers_configure_saml(backend: Backend) {
    let Some((app, acme)) = setup(backend).await else {
        return;
    };
    only_tenant_managers_may_configure(&app, &acme, SAML_CONNECTION, saml_connection_body).await;

    // Bad metadata and certificates: 422 naming the field and the SAML code.
    let with_idp = |idp: Value| {
        let mut body = saml_connection_body();
        body.as_object_mut().unwrap().remove("idp_metadata");
        for (key, value) in idp.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    for (body, field, code) in [
        (
            with_idp(json!({"idp_metadata": "not xml"})),
            "idp_metadata",
            "saml_malformed",
        ),
        (
            with_idp(json!({"idp_metadata":
                "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>"})),
            "idp_metadata",
            "saml_dtd_forbidden",
        ),
        (
            with_idp(
                json!({"idp_metadata": "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"x\"/>"}),
            ),
            "idp_metadata",
            "saml_invalid",
        ),
        (
            with_idp(
                json!({"idp_entity_id": "https://idp.example", "sso_url": "https://idp.example/sso",
                "certificate_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}),
            ),
            "certificate_pem",
            "saml_certificate",
        ),
        (
            with_idp(
                json!({"idp_entity_id": "https://idp.example", "sso_url": "javascript:alert(1)",
                "certificate_pem": SAML_IDP_KEY.certificate_pem}),
            ),
            "certificate_pem",
            "saml_invalid",
        ),
        (with_idp(json!({})), "idp_metadata", "either"),
    ] {
        let reply = app.put(SAML_CONNECTION, &acme.owner_token, body).await;
        reply.expect_problem(422, "validation_failed");
        assert_eq!(reply.str("field"), field, "{}", reply.text);
        assert!(reply.str("detail").contains(code), "{code}: {}", reply.text);
    }
    // Mapping to the owner role, or to a role that does not exist.
    let mut owner = saml_connection_body();
    owner["role_mapping"]["values"]["root"] = json!("owner");
    app.put(SAML_CONNECTION, &acme.owner_token, owner)
        .await
        .expect_problem(422, "validation_failed");

    // Certificate and an HTTP-POST-only SSO URL: logins use the POST binding.
    let by_certificate = with_idp(json!({
        "idp_entity_id": SAML_IDP_ENTITY, "sso_url": SAML_IDP_SSO_POST, "sso_binding": "post",
        "certificate_pem": SAML_IDP_KEY.certificate_pem}));
    let shown = app
        .put(SAML_CONNECTION, &acme.owner_token, by_certificate)
        .await;
    shown.expect(200);
    assert_eq!(shown.str("binding"), "post");
    assert!(shown.body["sso_redirect_url"].is_null());
    let page = get(&format!(
        "{}/v1/auth/sso/saml/start?tenant=acme",
        app.base_url
    ))
    .await;
    page.expect(200);
    let request = ReceivedRequest::from_post_form(&page.text);
    assert_eq!(request.destination, SAML_IDP_SSO_POST);
    let response = saml_response(&request, &alice(), &SamlTamper::None, app.clock.now());
    acs(&app, &request.relay_state, &response).await.expect(200);

    let trail = app.get("/v1/audit?limit=200", &acme.owner_token).await;
    assert!(trail.expect(200).text.contains("sso.connection.update"));
    app.stop().await;
}

async fn required_sso_applies_to_saml(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    app.create_user(&acme, "member@acme.test", &["member"])
        .await;
    required_sso_scenario(
        &app,
        &acme,
        SAML_CONNECTION,
        saml_connection_body(),
        async || saml_login(&app, "acme", &alice(), &SamlTamper::None).await,
        "/v1/auth/sso/saml/start",
    )
    .await;
    app.stop().await;
}

on_both_backends!(
    saml_login_creates_the_user_with_mapped_roles_in_both_bindings,
    every_bad_saml_response_is_refused,
    relay_state_and_replay_cache_make_responses_single_use,
    one_tenants_response_is_refused_at_another,
    only_tenant_managers_configure_saml,
    required_sso_applies_to_saml,
);
