//! SCIM 2.0 provisioning as Okta and Entra ID drive it: create, find by
//! filter, replace, patch (both vendors' shapes), deprovision (sessions and
//! tokens die on the next request), delete, pagination, groups granting and
//! revoking roles, uniqueness, bad filters, unknown attributes, the scope and
//! role checks (allowed and denied), another tenant's ids, and the audit trail.

use karen_testkit::{Backend, PASSWORD, Reply, TestApp, TestTenant, spawn};
use serde_json::{Value, json};

mod groups;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Sends a SCIM request with an `application/scim+json` body, as IdPs do.
async fn scim(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
    scim_with(app, method, path, token, body, None).await
}

async fn scim_with(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.base_url))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/scim+json")
            .body(body.to_string());
    }
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    Reply::read_response(request.send().await.unwrap()).await
}

/// Percent-encodes a query value.
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[track_caller]
fn expect_scim_error(reply: &Reply, status: u16, scim_type: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("application/scim+json"),
        "{}",
        reply.text
    );
    assert_eq!(reply.body["schemas"], json!([ERROR]), "{}", reply.text);
    assert_eq!(reply.body["status"], status.to_string(), "{}", reply.text);
    assert_eq!(reply.body["scimType"].as_str(), scim_type, "{}", reply.text);
    assert!(reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

/// An API key of the tenant's owner with only `scim:provision`.
async fn scim_key(app: &TestApp, tenant: &TestTenant) -> (String, String) {
    let (id, key) = app
        .create_api_key(
            &tenant.owner_token,
            json!({"name": "idp", "scopes": ["scim:provision"]}),
        )
        .await;
    (id.to_string(), key)
}

fn okta_user(email: &str, given: &str) -> Value {
    json!({"schemas": [USER], "userName": email,
        "name": {"givenName": given, "familyName": "Tester"},
        "emails": [{"primary": true, "value": email, "type": "work"}],
        "displayName": format!("{given} Tester"), "locale": "en-US",
        "externalId": format!("00u-{given}"), "groups": [], "active": true})
}

async fn roles_of(app: &TestApp, tenant: &TestTenant, id: &str) -> Vec<String> {
    let reply = app
        .get(&format!("/v1/users/{id}"), &tenant.owner_token)
        .await;
    let mut roles: Vec<String> = reply.expect(200).body["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    roles.sort();
    roles
}

/// The audit actions recorded for `key_id`.
async fn audited_by(app: &TestApp, tenant: &TestTenant, key_id: &str) -> Vec<String> {
    let mut actions = Vec::new();
    let mut path = "/v1/audit?limit=200".to_owned();
    loop {
        let trail = app.get(&path, &tenant.owner_token).await;
        for event in trail.expect(200).body["items"].as_array().unwrap() {
            if event["actor"]["kind"] == "api_key" && event["actor"]["id"] == key_id {
                actions.push(event["action"].as_str().unwrap().to_owned());
            }
        }
        match trail.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/audit?limit=200&after={cursor}"),
            None => return actions,
        }
    }
}

async fn okta_flow(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (key_id, key) = scim_key(&app, &acme).await;
    let find = format!(
        "/scim/v2/Users?filter={}&startIndex=1&count=100",
        enc(r#"userName eq "ada@acme.test""#)
    );
    let none = scim(&app, "GET", &find, &key, None).await;
    assert_eq!(
        none.expect(200).header("content-type"),
        Some("application/scim+json")
    );
    assert_eq!(none.body["totalResults"], 0);
    assert_eq!(none.body["Resources"], json!([]));

    let created = scim(
        &app,
        "POST",
        "/scim/v2/Users",
        &key,
        Some(okta_user("Ada@acme.test", "Ada")),
    )
    .await;
    created.expect(201);
    let id = created.str("id").to_owned();
    assert_eq!(created.str("userName"), "ada@acme.test");
    assert_eq!(created.body["active"], true);
    assert_eq!(created.body["name"]["givenName"], "Ada");
    assert_eq!(created.body["externalId"], "00u-Ada");
    assert_eq!(created.body["meta"]["resourceType"], "User");
    assert_eq!(
        created.body["meta"]["location"],
        format!("/scim/v2/Users/{id}")
    );
    assert_eq!(
        created.header("location"),
        Some(format!("/scim/v2/Users/{id}").as_str())
    );
    assert_eq!(
        created.header("etag"),
        created.body["meta"]["version"].as_str()
    );
    assert!(created.body["meta"]["created"].as_str().is_some());

    let found = scim(&app, "GET", &find, &key, None).await;
    assert_eq!(found.expect(200).body["totalResults"], 1);
    assert_eq!(found.body["itemsPerPage"], 1);
    assert_eq!(found.body["Resources"][0]["id"], id.as_str());
    // Karen's own view: a member without a password (SSO sign-in only).
    assert_eq!(roles_of(&app, &acme, &id).await, ["member"]);
    app.login("acme", "ada@acme.test", PASSWORD)
        .await
        .expect(401);
    // The data subject export shows what the provider set.
    let export = app
        .get(&format!("/v1/users/{id}/export"), &acme.owner_token)
        .await;
    let provisioning = &export.expect(200).body["provisioning"];
    assert_eq!(provisioning["external_id"], "00u-Ada", "{}", export.text);
    assert_eq!(provisioning["emails"][0]["value"], "ada@acme.test");

    let again = scim(
        &app,
        "POST",
        "/scim/v2/Users",
        &key,
        Some(okta_user("ada@ACME.test", "Ada")),
    )
    .await;
    expect_scim_error(&again, 409, Some("uniqueness"));

    // Okta updates with PUT, deactivates with PATCH.
    let mut changed = okta_user("ada@acme.test", "Adeline");
    changed["active"] = json!(false);
    let put = scim(
        &app,
        "PUT",
        &format!("/scim/v2/Users/{id}"),
        &key,
        Some(changed),
    )
    .await;
    assert_eq!(put.expect(200).body["name"]["givenName"], "Adeline");
    assert_eq!(put.body["active"], false);
    let karen = app.get(&format!("/v1/users/{id}"), &acme.owner_token).await;
    assert_eq!(karen.expect(200).str("status"), "disabled");
    let reactivate =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": true}}]});
    let patched = scim(
        &app,
        "PATCH",
        &format!("/scim/v2/Users/{id}"),
        &key,
        Some(reactivate),
    )
    .await;
    assert_eq!(patched.expect(200).body["active"], true);

    // DELETE: gone for SCIM, kept disabled for the audit trail, and back on a new POST.
    scim(&app, "DELETE", &format!("/scim/v2/Users/{id}"), &key, None)
        .await
        .expect(204);
    expect_scim_error(
        &scim(&app, "GET", &format!("/scim/v2/Users/{id}"), &key, None).await,
        404,
        None,
    );
    assert_eq!(
        scim(&app, "GET", &find, &key, None).await.body["totalResults"],
        0
    );
    let karen = app.get(&format!("/v1/users/{id}"), &acme.owner_token).await;
    assert_eq!(karen.expect(200).str("status"), "disabled");
    let back = scim(
        &app,
        "POST",
        "/scim/v2/Users",
        &key,
        Some(okta_user("ada@acme.test", "Ada")),
    )
    .await;
    assert_eq!(
        back.expect(201).str("id"),
        id,
        "the same account comes back"
    );
    assert_eq!(back.body["active"], true);

    let actions = audited_by(&app, &acme, &key_id).await;
    for action in [
        "scim.user.create",
        "scim.user.replace",
        "scim.user.patch",
        "scim.user.delete",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    app.stop().await;
}

async fn entra_flow(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, key) = scim_key(&app, &acme).await;
    let entra = json!({"schemas": [USER, ENTERPRISE], "externalId": "e-42",
        "userName": "bob@acme.test", "active": true, "displayName": "Bob",
        "meta": {"resourceType": "User"}, "title": "Engineer", "preferredLanguage": "en",
        "name": {"formatted": "Bob Builder", "familyName": "Builder", "givenName": "Bob"},
        ENTERPRISE: {"department": "R&D", "employeeNumber": "7"}});
    let created = scim(&app, "POST", "/scim/v2/Users", &key, Some(entra)).await;
    let id = created.expect(201).str("id").to_owned();
    let path = format!("/scim/v2/Users/{id}");
    let by_external = format!("/scim/v2/Users?filter={}", enc(r#"externalId eq "e-42""#));
    assert_eq!(
        scim(&app, "GET", &by_external, &key, None).await.body["Resources"][0]["id"],
        id.as_str()
    );

    let ops = json!({"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "displayName", "value": "Bob B."},
        {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "bob@work.acme.test"},
        {"op": "Replace", "path": "name.givenName", "value": "Robert"},
        {"op": "Add", "path": format!("{ENTERPRISE}:department"), "value": "Ops"},
        {"op": "Replace", "path": "title", "value": "Lead"}]});
    let patched = scim(&app, "PATCH", &path, &key, Some(ops)).await;
    patched.expect(200);
    assert_eq!(patched.str("displayName"), "Bob B.");
    assert_eq!(patched.body["name"]["givenName"], "Robert");
    assert_eq!(
        patched.body["emails"][0],
        json!({"value": "bob@work.acme.test", "type": "work", "primary": false})
    );

    // Entra sends booleans as strings, with a capitalised op; If-Match is honoured.
    let off = json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    let stale = scim_with(
        &app,
        "PATCH",
        &path,
        &key,
        Some(off.clone()),
        Some("W/\"1.1\""),
    )
    .await;
    expect_scim_error(&stale, 412, None);
    let current = patched.header("etag").unwrap().to_owned();
    let done = scim_with(&app, "PATCH", &path, &key, Some(off), Some(&current)).await;
    assert_eq!(done.expect(200).body["active"], false);

    // Refusals, each with its scimType.
    let unknown = json!({"schemas": [USER], "userName": "c@acme.test", "favouriteColour": "blue"});
    let reply = scim(&app, "POST", "/scim/v2/Users", &key, Some(unknown)).await;
    expect_scim_error(&reply, 400, Some("invalidSyntax"));
    assert!(reply.str("detail").contains("favouriteColour"));
    for (body, scim_type) in [
        (
            json!({"schemas": [USER], "userName": "not an email"}),
            "invalidValue",
        ),
        (
            json!({"schemas": [USER], "userName": "c@acme.test", "password": "Secret123!"}),
            "invalidValue",
        ),
        (json!({"userName": "c@acme.test"}), "invalidValue"),
    ] {
        let reply = scim(&app, "POST", "/scim/v2/Users", &key, Some(body)).await;
        expect_scim_error(&reply, 400, Some(scim_type));
    }
    for (op, scim_type) in [
        (
            json!({"op": "Replace", "path": "favouriteColour", "value": "x"}),
            "invalidPath",
        ),
        (
            json!({"op": "Replace", "path": "id", "value": "x"}),
            "mutability",
        ),
        (
            json!({"op": "Remove", "path": "emails[type eq \"home\"]"}),
            "noTarget",
        ),
        (json!({"op": "Remove", "path": "userName"}), "invalidValue"),
        (json!({"op": "Jump", "path": "active"}), "invalidSyntax"),
    ] {
        let body = json!({"schemas": [PATCH], "Operations": [op]});
        let reply = scim(&app, "PATCH", &path, &key, Some(body)).await;
        expect_scim_error(&reply, 400, Some(scim_type));
    }
    let malformed = app
        .http
        .post(format!("{}/scim/v2/Users", app.base_url))
        .bearer_auth(&key)
        .header("content-type", "application/scim+json")
        .body("{not json");
    let reply = Reply::read_response(malformed.send().await.unwrap()).await;
    expect_scim_error(&reply, 400, Some("invalidSyntax"));
    // Plain JSON bodies are accepted too.
    app.post(
        "/scim/v2/Users",
        &key,
        okta_user("plain@acme.test", "Plain"),
    )
    .await
    .expect(201);
    app.stop().await;
}

async fn deprovisioning_ends_sessions_at_once(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, key) = scim_key(&app, &acme).await;
    for (email, how) in [("pat@acme.test", "patch"), ("del@acme.test", "delete")] {
        // A user who signed in before SCIM took over the account.
        app.create_user(&acme, email, &["member"]).await;
        let login = app.login("acme", email, PASSWORD).await;
        let access = login.expect(200).str("access_token").to_owned();
        let refresh = login.str("refresh_token").to_owned();
        let (_, own_key) = app.create_api_key(&access, json!({"name": "mine"})).await;
        app.get("/v1/me", &access).await.expect(200);
        app.get("/v1/me", &own_key).await.expect(200);

        let find = format!(
            "/scim/v2/Users?filter={}",
            enc(&format!("userName eq \"{email}\""))
        );
        let found = scim(&app, "GET", &find, &key, None).await;
        let id = found.expect(200).body["Resources"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = format!("/scim/v2/Users/{id}");
        if how == "patch" {
            let off = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]});
            scim(&app, "PATCH", &path, &key, Some(off))
                .await
                .expect(200);
        } else {
            scim(&app, "DELETE", &path, &key, None).await.expect(204);
        }
        // The very next request with each credential fails.
        let me = app.get("/v1/me", &access).await;
        assert!(matches!(me.status, 401 | 403), "{how}: {}", me.text);
        let me = app.get("/v1/me", &own_key).await;
        assert!(matches!(me.status, 401 | 403), "{how}: {}", me.text);
        app.call(
            "POST",
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await
        .expect_problem(401, "invalid_token");
        assert!(app.login("acme", email, PASSWORD).await.status >= 400);
        if how == "patch" {
            // Reactivated: a fresh login works, the old session stays dead.
            let on = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": "True"}]});
            scim(&app, "PATCH", &path, &key, Some(on)).await.expect(200);
            app.login("acme", email, PASSWORD).await.expect(200);
            assert!(app.get("/v1/me", &access).await.status >= 400);
        }
    }
    // The key's own owner and the last owner are not deprovisioned.
    let owner = format!("/scim/v2/Users/{}", acme.owner_id);
    let off =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": false}}]});
    expect_scim_error(
        &scim(&app, "PATCH", &owner, &key, Some(off)).await,
        409,
        None,
    );
    app.get("/v1/me", &acme.owner_token).await.expect(200);
    app.stop().await;
}

async fn filters_and_pagination(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, key) = scim_key(&app, &acme).await;
    let mut ids = Vec::new();
    for n in 1..=5 {
        let reply = scim(
            &app,
            "POST",
            "/scim/v2/Users",
            &key,
            Some(okta_user(&format!("user{n}@acme.test"), &format!("U{n}"))),
        )
        .await;
        ids.push(reply.expect(201).str("id").to_owned());
    }
    let page = |start: i64, count: i64| format!("/scim/v2/Users?startIndex={start}&count={count}");
    let first = scim(&app, "GET", &page(1, 2), &key, None).await;
    assert_eq!(
        first.expect(200).body["totalResults"],
        6,
        "the owner and five users"
    );
    assert_eq!(first.body["startIndex"], 1);
    assert_eq!(first.body["itemsPerPage"], 2);
    let mut seen = Vec::new();
    for start in [1, 3, 5] {
        let reply = scim(&app, "GET", &page(start, 2), &key, None).await;
        for r in reply.body["Resources"].as_array().unwrap() {
            seen.push(r["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen.len(), 6);
    assert!(ids.iter().all(|id| seen.contains(id)));
    assert_eq!(
        scim(&app, "GET", &page(6, 5), &key, None).await.body["itemsPerPage"],
        1
    );
    let zero = scim(&app, "GET", &page(1, 0), &key, None).await;
    assert_eq!(
        (
            zero.body["totalResults"].as_i64(),
            zero.body["itemsPerPage"].as_i64()
        ),
        (Some(6), Some(0))
    );
    assert_eq!(
        scim(&app, "GET", &page(0, 1), &key, None).await.body["startIndex"],
        1
    );
    expect_scim_error(
        &scim(&app, "GET", "/scim/v2/Users?count=abc", &key, None).await,
        400,
        Some("invalidValue"),
    );

    // Attribute and operator names ignore case; the value is a JSON string.
    for filter in [
        r#"USERNAME Eq "User3@ACME.test""#,
        r#"userName eq "user3\u0040acme.test""#,
    ] {
        let reply = scim(
            &app,
            "GET",
            &format!("/scim/v2/Users?filter={}", enc(filter)),
            &key,
            None,
        )
        .await;
        assert_eq!(
            reply.expect(200).body["Resources"][0]["id"],
            ids[2].as_str(),
            "{filter}"
        );
    }
    let only = scim(
        &app,
        "GET",
        &format!("/scim/v2/Users/{}?attributes=userName", ids[0]),
        &key,
        None,
    )
    .await;
    let mut keys: Vec<&String> = only.expect(200).body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["id", "meta", "schemas", "userName"]);
    for bad in [
        r#"userName co "user""#,
        r#"userName eq "a" or userName eq "b""#,
        r#"name.givenName eq "U1""#,
        "userName eq user1",
        r#"displayName eq "U1 Tester""#,
        "",
    ] {
        let path = format!(
            "/scim/v2/Users?filter={}",
            enc(if bad.is_empty() { "userName" } else { bad })
        );
        expect_scim_error(
            &scim(&app, "GET", &path, &key, None).await,
            400,
            Some("invalidFilter"),
        );
    }
    // Groups: displayName filter, members left out on request.
    let group = json!({"schemas": [GROUP], "displayName": "Engineering", "externalId": "g-1",
        "members": [{"value": ids[0]}]});
    scim(&app, "POST", "/scim/v2/Groups", &key, Some(group))
        .await
        .expect(201);
    let path = format!(
        "/scim/v2/Groups?filter={}&excludedAttributes=members",
        enc(r#"displayName eq "engineering""#)
    );
    let found = scim(&app, "GET", &path, &key, None).await;
    assert_eq!(found.expect(200).body["totalResults"], 1);
    assert!(found.body["Resources"][0].get("members").is_none());
    let path = format!("/scim/v2/Groups?filter={}", enc(r#"externalId eq "g-1""#));
    assert_eq!(
        scim(&app, "GET", &path, &key, None).await.body["Resources"][0]["members"][0]["value"],
        ids[0].as_str()
    );
    let path = format!("/scim/v2/Groups?filter={}", enc(r#"userName eq "x""#));
    expect_scim_error(
        &scim(&app, "GET", &path, &key, None).await,
        400,
        Some("invalidFilter"),
    );
    app.stop().await;
}

on_both_backends!(
    okta_flow,
    entra_flow,
    deprovisioning_ends_sessions_at_once,
    filters_and_pagination,
);
