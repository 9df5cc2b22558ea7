//! Compliance reports on both backends: what each control shows from the
//! tenant's own state (administrators and their last sign-in, inactive
//! accounts under a moved clock, API keys without expiry, failed sign-ins,
//! the verified audit trail), what it cannot evidence, the three formats
//! with their escaping, who may ask, bad input, the CLI path for every
//! tenant, and that one tenant's report holds nothing of another's.

use std::time::Duration;

use karen_app::compliance::Framework;
use karen_domain::Clock as _;
use karen_testkit::{Backend, PASSWORD, TestApp, spawn, totp_code};
use serde_json::{Value, json};

on_both_backends!(
    reports_show_the_tenants_own_evidence,
    formats_permissions_and_bad_input
);

fn control<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no control {id} in {report}"))
}

fn evidence(control: &Value) -> String {
    control["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn report(app: &TestApp, token: &str, framework: &str) -> Value {
    let path = format!("/v1/tenant/compliance-report?framework={framework}");
    app.get(&path, token).await.expect(200).body.clone()
}

async fn reports_show_the_tenants_own_evidence(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    app.create_user(&acme, "ann@acme.test", &["member"]).await;
    app.create_user(&acme, "ada@acme.test", &["admin"]).await;
    app.create_api_key(&acme.owner_token, json!({"name": "acme-eternal"}))
        .await;
    app.login("acme", "ann@acme.test", "not the password")
        .await
        .expect(401);
    // The owner signs in with an authenticator; ada does not.
    let enrollment = app
        .post("/v1/auth/mfa/totp", &acme.owner_token, json!({}))
        .await;
    let secret = enrollment.expect(200).str("secret").to_owned();
    let code = totp_code(&secret, app.clock.now());
    app.post(
        "/v1/auth/mfa/totp/confirm",
        &acme.owner_token,
        json!({"code": code}),
    )
    .await
    .expect(200);
    // Retention: every content kind has a maximum age, enforced once.
    let policy = json!({"conversations_days": 365, "memories_days": 365, "documents_days": 365});
    app.put("/v1/tenant/retention", &acme.owner_token, policy)
        .await
        .expect(200);
    app.post("/v1/tenant/retention/run", &acme.owner_token, json!({}))
        .await
        .expect(200);

    let soc2 = report(&app, &acme.owner_token, "soc2").await;
    assert_eq!(soc2["framework"], "soc2");
    assert_eq!(soc2["tenant_slug"], "acme");
    // Access review: both administrators, with their last sign-in.
    let access = evidence(control(&soc2, "CC6.2"));
    assert!(
        access.contains("3 active users (0 disabled), 2 with administrative rights"),
        "{access}"
    );
    assert!(
        access.contains(&format!("administrator {}", acme.owner_email)),
        "{access}"
    );
    assert!(
        access.contains("administrator ada@acme.test (roles admin)"),
        "{access}"
    );
    assert!(!access.contains("administrator ann@acme.test"), "{access}");
    assert_eq!(
        control(&soc2, "CC6.2")["status"],
        "pass",
        "nobody inactive yet"
    );
    // CC6.1 fails: a key without expiry, an administrator without MFA, and
    // no MFA policy; SSO is not evidenced.
    let cc61 = control(&soc2, "CC6.1");
    assert_eq!(cc61["status"], "fail");
    let text = evidence(cc61);
    assert!(text.contains("no expiry: key 'acme-eternal'"), "{text}");
    assert!(
        text.contains(
            "1 of 3 active users and 1 of 2 administrators sign in with an authenticator"
        ),
        "{text}"
    );
    assert!(
        text.contains("administrator without MFA: ada@acme.test"),
        "{text}"
    );
    assert!(text.contains("settings.mfa_required = off"), "{text}");
    let gaps = cc61["gaps"].to_string();
    assert!(
        gaps.contains("single sign-on (OIDC, SAML) and its enforcement is not built"),
        "{gaps}"
    );
    // The failed sign-in is counted; the verified, signed audit chain passes.
    let cc72 = control(&soc2, "CC7.2");
    assert!(
        evidence(cc72).contains("1 failed sign-ins in the last 30 days"),
        "{cc72}"
    );
    assert_eq!(cc72["status"], "pass", "{cc72}");
    assert!(evidence(cc72).contains("verified intact"), "{cc72}");
    // Retention is set by the tenant and was just enforced.
    let disposal = control(&soc2, "C1.2");
    assert_eq!(disposal["status"], "pass", "{disposal}");
    let text = evidence(disposal);
    assert!(
        text.contains("policy (set by the tenant): conversations 365 days"),
        "{text}"
    );
    assert!(text.contains("last enforced"), "{text}");
    // Nothing is "pass" that Karen cannot see.
    assert_eq!(control(&soc2, "CC6.7")["status"], "not_evidenced");

    // 91 days on, nobody has signed in: every account is inactive. The owner
    // logs in again and so is active once more.
    app.clock.advance(Duration::from_secs(91 * 86_400));
    let challenge = app.login("acme", &acme.owner_email, PASSWORD).await;
    let challenge = challenge.expect(200).str("challenge").to_owned();
    let code = totp_code(&secret, app.clock.now());
    let login = app
        .call(
            "POST",
            "/v1/auth/login/mfa",
            None,
            Some(json!({"challenge": challenge, "code": code})),
        )
        .await;
    let owner = login.expect(200).str("access_token").to_owned();
    let hipaa = report(&app, &owner, "hipaa").await;
    let termination = control(&hipaa, "164.308(a)(3)(ii)(C)");
    assert_eq!(termination["status"], "fail");
    let text = evidence(termination);
    assert!(
        text.contains("2 of 3 active accounts have not signed in for 90 days"),
        "{text}"
    );
    assert!(text.contains("inactive: ann@acme.test"), "{text}");
    assert!(
        !text.contains(&format!("inactive: {}", acme.owner_email)),
        "{text}"
    );
    // Content is sealed under a data key made 91 days ago.
    let encryption = control(&hipaa, "164.312(a)(2)(iv)");
    assert_eq!(encryption["status"], "pass", "{encryption}");
    assert!(
        evidence(encryption).contains("current data key version 1 created"),
        "{encryption}"
    );
    // And retention has not run for 91 days.
    let documentation = control(&hipaa, "164.316(b)(2)(i)");
    assert_eq!(documentation["status"], "fail");
    assert!(
        documentation["gaps"]
            .to_string()
            .contains("no enforcement run in the last 7 days")
    );
    let gdpr = report(&app, &owner, "gdpr").await;
    let erasure = control(&gdpr, "Art. 17");
    assert_eq!(erasure["status"], "pass");
    assert!(
        erasure["evidence"]
            .to_string()
            .contains("0 erasure(s) recorded")
    );

    // Globex's report holds nothing of acme's.
    let globex_owner = app.token("globex", &globex.owner_email, PASSWORD).await;
    let other = report(&app, &globex_owner, "soc2").await.to_string();
    for foreign in [
        "ann@acme.test",
        "ada@acme.test",
        "acme-eternal",
        acme.owner_email.as_str(),
    ] {
        assert!(!other.contains(foreign), "{foreign} in globex's report");
    }
    // Asking is audited.
    let trail = app.get("/v1/audit?action=compliance.report", &owner).await;
    assert!(trail.expect(200).body["items"].as_array().unwrap().len() >= 3);

    // The CLI's path: one report per tenant.
    let all = karen::audit::compliance_reports(&app.karen.services, None, Framework::Soc2)
        .await
        .unwrap();
    let slugs: Vec<_> = all.iter().map(|r| r.tenant_slug.as_str()).collect();
    assert_eq!(slugs.len(), 2);
    assert!(slugs.contains(&"acme") && slugs.contains(&"globex"));
    app.stop().await;
}

async fn formats_permissions_and_bad_input(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, member) = app.create_user(&acme, "ann@acme.test", &["member"]).await;
    let (_, analyst) = app.create_user(&acme, "al@acme.test", &["analyst"]).await;
    // Names a spreadsheet or a browser would run.
    app.create_api_key(&acme.owner_token, json!({"name": "=HYPERLINK(\"x\")"}))
        .await;
    app.create_api_key(&acme.owner_token, json!({"name": "<script>x</script>"}))
        .await;
    let path = "/v1/tenant/compliance-report?framework=soc2";

    // Denied without audit:read; an analyst (audit:read) may.
    app.get(path, &member).await.expect(403);
    app.get(path, &analyst).await.expect(200);

    let csv = app
        .get(&format!("{path}&format=csv"), &acme.owner_token)
        .await;
    let csv = csv.expect(200);
    assert!(
        csv.header("content-type")
            .unwrap_or_default()
            .starts_with("text/csv")
    );
    assert!(
        csv.header("content-disposition")
            .unwrap_or_default()
            .contains("compliance-soc2-acme.csv")
    );
    assert!(
        csv.text
            .starts_with("tenant,framework,control,title,status,evidence,gaps\n")
    );
    assert!(csv.text.contains("acme,soc2,CC6.1,"), "{}", csv.text);
    assert!(
        !csv.text.contains(",=HYPERLINK"),
        "formula not defused: {}",
        csv.text
    );

    let html = app
        .get(&format!("{path}&format=html"), &acme.owner_token)
        .await;
    let html = html.expect(200);
    assert!(
        html.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert!(html.text.contains("&lt;script&gt;x&lt;/script&gt;"));
    assert!(!html.text.contains("<script>"));

    for (query, field) in [
        ("framework=iso27001", "framework"),
        ("framework=soc2&format=pdf", "format"),
    ] {
        let reply = app
            .get(
                &format!("/v1/tenant/compliance-report?{query}"),
                &acme.owner_token,
            )
            .await;
        let reply = reply.expect(422);
        assert!(reply.text.contains(field), "{}", reply.text);
    }
    app.get("/v1/tenant/compliance-report", &acme.owner_token)
        .await
        .expect(400);
    app.get(&format!("{path}&color=red"), &acme.owner_token)
        .await
        .expect(400);
    app.stop().await;
}
