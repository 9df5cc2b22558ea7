//! Authorization: for every built-in role and every tenant endpoint, what it may
//! do and what it may not; no escalation beyond one's own permissions; the last
//! owner is protected; custom roles and API-key scopes take effect at once.

use karen_domain::permission::{BuiltinRole, Permission};
use karen_testkit::{Backend, PASSWORD, spawn};
use serde_json::{Value, json};
use uuid::Uuid;

struct Case {
    method: &'static str,
    path: String,
    body: Option<Value>,
    needs: Option<Permission>,
}

fn case(
    method: &'static str,
    path: impl Into<String>,
    body: Option<Value>,
    needs: Option<Permission>,
) -> Case {
    Case {
        method,
        path: path.into(),
        body,
        needs,
    }
}

async fn every_role_is_allowed_exactly_what_it_holds(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (target, _) = app
        .create_user(&acme, "target@acme.test", &["viewer"])
        .await;
    let mut tokens = Vec::new();
    for role in BuiltinRole::ALL {
        let email = format!("role-{}@acme.test", role.name().replace('_', "-"));
        let (_, token) = app.create_user(&acme, &email, &[role.name()]).await;
        tokens.push((*role, token));
    }
    for (role, token) in &tokens {
        let held = role.permissions();
        let fresh = Uuid::now_v7().simple().to_string();
        // The role that PATCH/DELETE act on is (re)created by the owner first.
        app.post(
            "/v1/roles",
            &acme.owner_token,
            json!({"name": "scratch", "permissions": ["chat:read"]}),
        )
        .await;
        let cases = [
            case("GET", "/v1/me", None, None),
            case("GET", "/v1/permissions", None, None),
            case("GET", "/v1/users", None, Some(Permission::UsersRead)),
            case(
                "GET",
                format!("/v1/users/{target}"),
                None,
                Some(Permission::UsersRead),
            ),
            case(
                "POST",
                "/v1/users",
                Some(json!({"email": format!("{fresh}@acme.test"), "roles": ["viewer"]})),
                Some(Permission::UsersManage),
            ),
            case(
                "PATCH",
                format!("/v1/users/{target}"),
                Some(json!({"display_name": "T"})),
                Some(Permission::UsersManage),
            ),
            case(
                "PUT",
                format!("/v1/users/{target}/roles"),
                Some(json!({"roles": ["viewer"]})),
                Some(Permission::UsersManage),
            ),
            case(
                "POST",
                format!("/v1/users/{target}/disable"),
                None,
                Some(Permission::UsersManage),
            ),
            case(
                "POST",
                format!("/v1/users/{target}/enable"),
                None,
                Some(Permission::UsersManage),
            ),
            case(
                "POST",
                format!("/v1/users/{target}/unlock"),
                None,
                Some(Permission::UsersManage),
            ),
            case("GET", "/v1/roles", None, Some(Permission::UsersRead)),
            case(
                "GET",
                "/v1/roles/scratch",
                None,
                Some(Permission::UsersRead),
            ),
            case(
                "POST",
                "/v1/roles",
                Some(json!({"name": format!("r-{fresh}"), "permissions": ["chat:read"]})),
                Some(Permission::RolesManage),
            ),
            case(
                "PATCH",
                "/v1/roles/scratch",
                Some(json!({"description": "x"})),
                Some(Permission::RolesManage),
            ),
            case(
                "DELETE",
                "/v1/roles/scratch",
                None,
                Some(Permission::RolesManage),
            ),
            case(
                "POST",
                "/v1/api-keys",
                Some(json!({"name": "k", "scopes": ["tenant:read"]})),
                Some(Permission::ApiKeysCreate),
            ),
            case("GET", "/v1/api-keys", None, Some(Permission::ApiKeysCreate)),
            case(
                "GET",
                "/v1/api-keys?all=true",
                None,
                Some(Permission::ApiKeysManage),
            ),
            case("GET", "/v1/tenant", None, Some(Permission::TenantRead)),
            case(
                "GET",
                "/v1/tenant/index",
                None,
                Some(Permission::TenantManage),
            ),
            case(
                "PATCH",
                "/v1/tenant",
                Some(json!({"name": "Acme"})),
                Some(Permission::TenantManage),
            ),
        ];
        for case in cases {
            let reply = app
                .call(case.method, &case.path, Some(token), case.body.clone())
                .await;
            let allowed = case.needs.is_none_or(|p| held.contains(p));
            if allowed {
                assert!(
                    reply.status < 300,
                    "{} should be allowed {} {}: {}",
                    role.name(),
                    case.method,
                    case.path,
                    reply.text
                );
            } else {
                reply.expect_problem(403, "permission_denied");
                assert_eq!(
                    reply.body["required_permission"],
                    case.needs.unwrap().as_str(),
                    "{} {}",
                    case.method,
                    case.path
                );
            }
        }
    }
    app.stop().await;
}

async fn nobody_grants_more_than_they_hold(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, manager) = app
        .create_user(&acme, "manager@acme.test", &["user_manager"])
        .await;
    let (admin_id, admin) = app.create_user(&acme, "admin@acme.test", &["admin"]).await;
    let (member_id, _) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;

    // A user manager onboards members but cannot mint admins or analysts.
    app.post(
        "/v1/users",
        &manager,
        json!({"email": "m2@acme.test", "roles": ["member"]}),
    )
    .await
    .expect(201);
    for roles in [json!(["admin"]), json!(["analyst"]), json!(["owner"])] {
        app.post(
            "/v1/users",
            &manager,
            json!({"email": "x@acme.test", "roles": roles}),
        )
        .await
        .expect_problem(403, "forbidden");
        app.put(
            &format!("/v1/users/{member_id}/roles"),
            &manager,
            json!({"roles": roles}),
        )
        .await
        .expect_problem(403, "forbidden");
    }
    // Nor act on someone holding more than they do.
    app.post(
        &format!("/v1/users/{admin_id}/disable"),
        &manager,
        json!({}),
    )
    .await
    .expect_problem(403, "forbidden");
    app.patch(
        &format!("/v1/users/{admin_id}"),
        &manager,
        json!({"display_name": "pwned"}),
    )
    .await
    .expect_problem(403, "forbidden");
    // An admin (everything but billing) cannot make owners or touch the owner.
    app.put(
        &format!("/v1/users/{member_id}/roles"),
        &admin,
        json!({"roles": ["owner"]}),
    )
    .await
    .expect_problem(403, "forbidden");
    app.post(
        &format!("/v1/users/{}/disable", acme.owner_id),
        &admin,
        json!({}),
    )
    .await
    .expect_problem(403, "forbidden");
    // … nor craft a custom role above itself, nor widen one to above itself.
    app.post(
        "/v1/roles",
        &admin,
        json!({"name": "billing", "permissions": ["billing:manage"]}),
    )
    .await
    .expect_problem(403, "forbidden");
    app.post(
        "/v1/roles",
        &admin,
        json!({"name": "helper", "permissions": ["chat:read"]}),
    )
    .await
    .expect(201);
    app.patch(
        "/v1/roles/helper",
        &admin,
        json!({"permissions": ["billing:manage"]}),
    )
    .await
    .expect_problem(403, "forbidden");
    // Built-in roles cannot be redefined; unknown permissions and roles are named.
    app.patch(
        "/v1/roles/member",
        &acme.owner_token,
        json!({"permissions": []}),
    )
    .await
    .expect_problem(403, "forbidden");
    let unknown = app
        .post(
            "/v1/roles",
            &acme.owner_token,
            json!({"name": "odd", "permissions": ["chat:fly"]}),
        )
        .await;
    assert!(
        unknown
            .expect_problem(422, "validation_failed")
            .str("detail")
            .contains("chat:fly")
    );
    let unknown = app
        .put(
            &format!("/v1/users/{member_id}/roles"),
            &acme.owner_token,
            json!({"roles": ["wizard"]}),
        )
        .await;
    assert!(
        unknown
            .expect_problem(422, "validation_failed")
            .str("detail")
            .contains("wizard")
    );
    app.stop().await;
}

async fn the_last_owner_stays(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let owner = acme.owner_token.as_str();
    app.put(
        &format!("/v1/users/{}/roles", acme.owner_id),
        owner,
        json!({"roles": ["admin"]}),
    )
    .await
    .expect_problem(409, "conflict");
    app.post(
        &format!("/v1/users/{}/disable", acme.owner_id),
        owner,
        json!({}),
    )
    .await
    .expect_problem(409, "conflict");
    // With a second owner, the first may step down.
    let (second, second_token) = app.create_user(&acme, "second@acme.test", &["owner"]).await;
    app.put(
        &format!("/v1/users/{}/roles", acme.owner_id),
        owner,
        json!({"roles": ["admin"]}),
    )
    .await
    .expect(200);
    // Now the second is the last one.
    app.post(
        &format!("/v1/users/{second}/disable"),
        &second_token,
        json!({}),
    )
    .await
    .expect_problem(409, "conflict");
    app.stop().await;
}

async fn custom_roles_and_changes_apply_on_the_next_request(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let owner = acme.owner_token.as_str();
    app.post("/v1/roles", owner, json!({"name": "auditor", "description": "reads users", "permissions": ["users:read", "audit:read"]}))
        .await
        .expect(201);
    let (member, token) = app.create_user(&acme, "m@acme.test", &["member"]).await;
    app.get("/v1/users", &token)
        .await
        .expect_problem(403, "permission_denied");
    app.put(
        &format!("/v1/users/{member}/roles"),
        owner,
        json!({"roles": ["member", "auditor"]}),
    )
    .await
    .expect(200);
    app.get("/v1/users", &token).await.expect(200);
    let me = app.get("/v1/me", &token).await;
    assert!(
        me.body["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("audit:read"))
    );
    app.patch(
        "/v1/roles/auditor",
        owner,
        json!({"permissions": ["audit:read"]}),
    )
    .await
    .expect(200);
    app.get("/v1/users", &token)
        .await
        .expect_problem(403, "permission_denied");
    // A role in use cannot be deleted; once unassigned it can.
    app.delete("/v1/roles/auditor", owner)
        .await
        .expect_problem(409, "conflict");
    app.put(
        &format!("/v1/users/{member}/roles"),
        owner,
        json!({"roles": ["member"]}),
    )
    .await
    .expect(200);
    app.delete("/v1/roles/auditor", owner).await.expect(204);
    app.get("/v1/roles/auditor", owner)
        .await
        .expect_problem(404, "not_found");
    app.stop().await;
}

async fn api_keys_carry_at_most_their_scopes_and_their_owner(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, reader) = app
        .create_api_key(
            &acme.owner_token,
            json!({"name": "reader", "scopes": ["users:read"]}),
        )
        .await;
    app.get("/v1/users", &reader).await.expect(200);
    let denied = app
        .post("/v1/users", &reader, json!({"email": "x@acme.test"}))
        .await;
    denied.expect_problem(403, "permission_denied");
    assert_eq!(denied.body["required_permission"], "users:manage");
    let me = app.get("/v1/me", &reader).await;
    assert_eq!(me.expect(200).body["permissions"], json!(["users:read"]));
    assert_eq!(me.str("auth_method"), "api_key");

    // A member's key cannot exceed the member, and shrinks when the member does.
    let (member, member_token) = app.create_user(&acme, "m@acme.test", &["member"]).await;
    app.post(
        "/v1/api-keys",
        &member_token,
        json!({"name": "k", "scopes": ["users:manage"]}),
    )
    .await
    .expect_problem(403, "forbidden");
    let (_, member_key) = app
        .create_api_key(&member_token, json!({"name": "all of mine"}))
        .await;
    let granted: Vec<Value> = app.get("/v1/me", &member_key).await.body["permissions"]
        .as_array()
        .unwrap()
        .clone();
    assert!(granted.contains(&json!("chat:write")));
    app.put(
        &format!("/v1/users/{member}/roles"),
        &acme.owner_token,
        json!({"roles": ["viewer"]}),
    )
    .await
    .expect(200);
    let shrunk = app.get("/v1/me", &member_key).await;
    assert!(
        !shrunk.body["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("chat:write"))
    );
    // A key created through a key is within that key's scopes.
    app.post("/v1/api-keys", &reader, json!({"name": "child"}))
        .await
        .expect_problem(403, "permission_denied");
    app.stop().await;
}

async fn api_keys_are_shown_once_expire_and_revoke(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let owner = acme.owner_token.as_str();
    let created = app.post("/v1/api-keys", owner, json!({"name": "ci"})).await;
    created.expect(201);
    let secret = created.str("key").to_owned();
    assert!(secret.starts_with("krn_"));
    let id = created.uuid("/api_key/id");
    assert!(secret.starts_with(created.body["api_key"]["prefix"].as_str().unwrap()));
    let shown = app.get(&format!("/v1/api-keys/{id}"), owner).await;
    assert!(
        !shown.expect(200).text.contains(&secret[20..]),
        "the secret is never shown again"
    );
    assert!(shown.body["last_used_at"].is_null());
    app.get("/v1/me", &secret).await.expect(200);
    assert!(!app.get(&format!("/v1/api-keys/{id}"), owner).await.body["last_used_at"].is_null());
    // Revocation is immediate.
    app.delete(&format!("/v1/api-keys/{id}"), owner)
        .await
        .expect(200);
    app.get("/v1/me", &secret)
        .await
        .expect_problem(401, "invalid_token");
    // Expiry.
    let now = karen_domain::Clock::now(app.clock.as_ref());
    let soon = (now + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, expiring) = app
        .create_api_key(owner, json!({"name": "temp", "expires_at": soon}))
        .await;
    app.get("/v1/me", &expiring).await.expect(200);
    app.clock.advance(std::time::Duration::from_secs(2 * 3600));
    app.get("/v1/me", &expiring)
        .await
        .expect_problem(401, "invalid_token");
    let owner = app.token("acme", &acme.owner_email, PASSWORD).await;
    app.post(
        "/v1/api-keys",
        &owner,
        json!({"name": "past", "expires_at": "2001-01-01T00:00:00Z"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    app.stop().await;
}

async fn members_see_only_their_own_keys(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, alice) = app.create_user(&acme, "alice@acme.test", &["member"]).await;
    let (_, bob) = app.create_user(&acme, "bob@acme.test", &["member"]).await;
    let (alice_key, alice_secret) = app.create_api_key(&alice, json!({"name": "alice"})).await;
    let (bob_key, _) = app.create_api_key(&bob, json!({"name": "bob"})).await;
    let listed = app.get("/v1/api-keys", &alice).await;
    assert_eq!(listed.expect(200).item_ids(), vec![alice_key.to_string()]);
    app.get("/v1/api-keys?all=true", &alice)
        .await
        .expect_problem(403, "permission_denied");
    // Another member's key is invisible (404), not forbidden.
    app.get(&format!("/v1/api-keys/{bob_key}"), &alice)
        .await
        .expect_problem(404, "not_found");
    app.delete(&format!("/v1/api-keys/{bob_key}"), &alice)
        .await
        .expect_problem(404, "not_found");
    // An admin manages every key.
    let all = app.get("/v1/api-keys?all=true", &acme.owner_token).await;
    assert_eq!(all.expect(200).item_ids().len(), 2);
    app.delete(&format!("/v1/api-keys/{alice_key}"), &acme.owner_token)
        .await
        .expect(200);
    app.get("/v1/me", &alice_secret)
        .await
        .expect_problem(401, "invalid_token");
    app.stop().await;
}

on_both_backends!(
    every_role_is_allowed_exactly_what_it_holds,
    nobody_grants_more_than_they_hold,
    the_last_owner_stays,
    custom_roles_and_changes_apply_on_the_next_request,
    api_keys_carry_at_most_their_scopes_and_their_owner,
    api_keys_are_shown_once_expire_and_revoke,
    members_see_only_their_own_keys,
);
