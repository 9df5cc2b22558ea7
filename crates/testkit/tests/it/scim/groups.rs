//! SCIM groups granting and revoking roles, and who may use SCIM at all:
//! roles and key scopes (allowed and denied), another tenant's ids, and the
//! discovery documents.

use karen_domain::permission::BuiltinRole;
use karen_testkit::{Backend, spawn};
use serde_json::json;

use super::{
    GROUP, PATCH, USER, audited_by, expect_scim_error, okta_user, roles_of, scim, scim_key,
};

async fn groups_grant_and_revoke_roles(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (key_id, key) = scim_key(&app, &acme).await;
    let mut ids = Vec::new();
    for n in 1..=2 {
        let reply = scim(
            &app,
            "POST",
            "/scim/v2/Users",
            &key,
            Some(okta_user(&format!("g{n}@acme.test"), &format!("G{n}"))),
        )
        .await;
        ids.push(reply.expect(201).str("id").to_owned());
    }
    let (u1, u2) = (ids[0].clone(), ids[1].clone());
    // u2 holds analyst directly, before any group grants it.
    app.put(
        &format!("/v1/users/{u2}/roles"),
        &acme.owner_token,
        json!({"roles": ["member", "analyst"]}),
    )
    .await
    .expect(200);
    let created = scim(
        &app,
        "POST",
        "/scim/v2/Groups",
        &key,
        Some(json!({"schemas": [GROUP], "displayName": "Analyst", "members": [{"value": u1}]})),
    )
    .await;
    let group = created.expect(201).str("id").to_owned();
    let path = format!("/scim/v2/Groups/{group}");
    assert_eq!(roles_of(&app, &acme, &u1).await, ["analyst", "member"]);
    let dup = scim(
        &app,
        "POST",
        "/scim/v2/Groups",
        &key,
        Some(json!({"schemas": [GROUP], "displayName": "ANALYST"})),
    )
    .await;
    expect_scim_error(&dup, 409, Some("uniqueness"));

    // Entra adds with a list value; Okta removes with a filter path.
    let add = json!({"schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"value": u2}]}]});
    let added = scim(&app, "PATCH", &path, &key, Some(add)).await;
    assert_eq!(
        added.expect(200).body["members"].as_array().unwrap().len(),
        2
    );
    let remove = |id: &str| json!({"schemas": [PATCH], "Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]});
    scim(&app, "PATCH", &path, &key, Some(remove(&u1)))
        .await
        .expect(200);
    assert_eq!(
        roles_of(&app, &acme, &u1).await,
        ["member"],
        "the group's role goes with the group"
    );
    expect_scim_error(
        &scim(&app, "PATCH", &path, &key, Some(remove(&u1))).await,
        400,
        Some("noTarget"),
    );
    scim(&app, "PATCH", &path, &key, Some(remove(&u2)))
        .await
        .expect(200);
    assert_eq!(
        roles_of(&app, &acme, &u2).await,
        ["analyst", "member"],
        "held before: kept"
    );

    // Renaming moves the grant to the new name's role; deleting takes it away.
    let members = json!([{"value": u1}, {"value": u2}]);
    let renamed = scim(
        &app,
        "PUT",
        &path,
        &key,
        Some(json!({"schemas": [GROUP], "displayName": "Viewer", "members": members})),
    )
    .await;
    assert_eq!(renamed.expect(200).str("displayName"), "Viewer");
    assert_eq!(roles_of(&app, &acme, &u1).await, ["member", "viewer"]);
    assert_eq!(
        roles_of(&app, &acme, &u2).await,
        ["analyst", "member", "viewer"]
    );
    scim(&app, "DELETE", &path, &key, None).await.expect(204);
    assert_eq!(roles_of(&app, &acme, &u1).await, ["member"]);
    assert_eq!(roles_of(&app, &acme, &u2).await, ["analyst", "member"]);
    expect_scim_error(&scim(&app, "GET", &path, &key, None).await, 404, None);

    // A group without a matching role grants nothing; unknown members are refused.
    let plain = json!({"schemas": [GROUP], "displayName": "Book club", "members": [{"value": u1}]});
    scim(&app, "POST", "/scim/v2/Groups", &key, Some(plain))
        .await
        .expect(201);
    assert_eq!(roles_of(&app, &acme, &u1).await, ["member"]);
    let ghost = json!({"schemas": [GROUP], "displayName": "Ghosts", "members": [{"value": uuid::Uuid::now_v7()}]});
    expect_scim_error(
        &scim(&app, "POST", "/scim/v2/Groups", &key, Some(ghost)).await,
        400,
        Some("invalidValue"),
    );

    // An admin's key cannot grant what the admin lacks (billing, through owner).
    let (_, admin_token) = app.create_user(&acme, "admin@acme.test", &["admin"]).await;
    let (_, admin_key) = app
        .create_api_key(
            &admin_token,
            json!({"name": "idp", "scopes": ["scim:provision"]}),
        )
        .await;
    let owners = json!({"schemas": [GROUP], "displayName": "owner", "members": [{"value": u1}]});
    expect_scim_error(
        &scim(&app, "POST", "/scim/v2/Groups", &admin_key, Some(owners)).await,
        403,
        None,
    );
    assert_eq!(roles_of(&app, &acme, &u1).await, ["member"]);

    let actions = audited_by(&app, &acme, &key_id).await;
    for action in [
        "scim.group.create",
        "scim.group.patch",
        "scim.group.replace",
        "scim.group.delete",
        "scim.user.roles",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    app.stop().await;
}

async fn scope_roles_and_tenants(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let bravo = app.create_tenant("bravo").await;
    let (_, key) = scim_key(&app, &acme).await;
    let (_, b_key) = scim_key(&app, &bravo).await;

    // Allowed and denied: roles holding scim:provision (owner, admin) and keys naming it.
    for role in BuiltinRole::ALL {
        let email = format!("r-{}@acme.test", role.name().replace('_', "-"));
        let (_, token) = app.create_user(&acme, &email, &[role.name()]).await;
        let reply = scim(&app, "GET", "/scim/v2/Users", &token, None).await;
        if role
            .permissions()
            .contains(karen_domain::Permission::ScimProvision)
        {
            reply.expect(200);
        } else {
            expect_scim_error(&reply, 403, None);
            assert!(
                reply.str("detail").contains("scim:provision"),
                "{}",
                reply.text
            );
            // Nor can they mint a key that could.
            let minted = app
                .post(
                    "/v1/api-keys",
                    &token,
                    json!({"name": "x", "scopes": ["scim:provision"]}),
                )
                .await;
            assert!(matches!(minted.status, 403), "{}", minted.text);
        }
    }
    let (_, plain_key) = app
        .create_api_key(&acme.owner_token, json!({"name": "no scopes"}))
        .await;
    expect_scim_error(
        &scim(&app, "GET", "/scim/v2/Users", &plain_key, None).await,
        403,
        None,
    );
    expect_scim_error(
        &scim(&app, "GET", "/scim/v2/Users", "krn_nonsense", None).await,
        401,
        None,
    );
    let anonymous = app.call("GET", "/scim/v2/Groups", None, None).await;
    expect_scim_error(&anonymous, 401, None);

    // Another tenant's user and group ids answer 404 like missing ones; lists stay apart.
    let b_user = scim(
        &app,
        "POST",
        "/scim/v2/Users",
        &b_key,
        Some(okta_user("x@bravo.test", "X")),
    )
    .await;
    let b_user = b_user.expect(201).str("id").to_owned();
    let b_group = scim(
        &app,
        "POST",
        "/scim/v2/Groups",
        &b_key,
        Some(json!({"schemas": [GROUP], "displayName": "admin", "members": [{"value": b_user}]})),
    )
    .await;
    let b_group = b_group.expect(201).str("id").to_owned();
    let off = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]});
    for (method, path, body) in [
        ("GET", format!("/scim/v2/Users/{b_user}"), None),
        (
            "PUT",
            format!("/scim/v2/Users/{b_user}"),
            Some(okta_user("x@bravo.test", "X")),
        ),
        (
            "PATCH",
            format!("/scim/v2/Users/{b_user}"),
            Some(off.clone()),
        ),
        ("DELETE", format!("/scim/v2/Users/{b_user}"), None),
        ("GET", format!("/scim/v2/Groups/{b_group}"), None),
        (
            "PATCH",
            format!("/scim/v2/Groups/{b_group}"),
            Some(off.clone()),
        ),
        ("DELETE", format!("/scim/v2/Groups/{b_group}"), None),
        ("GET", "/scim/v2/Users/not-a-uuid".into(), None),
    ] {
        expect_scim_error(&scim(&app, method, &path, &key, body).await, 404, None);
    }
    let into_mine =
        json!({"schemas": [GROUP], "displayName": "mine", "members": [{"value": b_user}]});
    expect_scim_error(
        &scim(&app, "POST", "/scim/v2/Groups", &key, Some(into_mine)).await,
        400,
        Some("invalidValue"),
    );
    let listed = scim(&app, "GET", "/scim/v2/Users", &key, None).await;
    assert!(!listed.expect(200).text.contains(&b_user));
    assert!(
        !scim(&app, "GET", "/scim/v2/Groups", &key, None)
            .await
            .text
            .contains(&b_group)
    );
    let b_after = scim(
        &app,
        "GET",
        &format!("/scim/v2/Users/{b_user}"),
        &b_key,
        None,
    )
    .await;
    assert_eq!(b_after.expect(200).body["active"], true);

    // Discovery documents say what is supported.
    let config = scim(&app, "GET", "/scim/v2/ServiceProviderConfig", &key, None).await;
    config.expect(200);
    assert_eq!(config.body["patch"]["supported"], true);
    assert_eq!(
        config.body["filter"],
        json!({"supported": true, "maxResults": 200})
    );
    assert_eq!(config.body["bulk"]["supported"], false);
    assert_eq!(config.body["sort"]["supported"], false);
    assert_eq!(config.body["etag"]["supported"], true);
    for path in ["/scim/v2/Bulk", "/scim/v2/Me", "/scim/v2/Users/x/y"] {
        expect_scim_error(&scim(&app, "POST", path, &key, None).await, 404, None);
    }
    let wrong_method = scim(
        &app,
        "POST",
        &format!("/scim/v2/Users/{b_user}"),
        &key,
        None,
    )
    .await;
    expect_scim_error(&wrong_method, 405, None);
    let types = scim(&app, "GET", "/scim/v2/ResourceTypes", &key, None).await;
    assert_eq!(types.expect(200).body["totalResults"], 2);
    let schemas = scim(&app, "GET", "/scim/v2/Schemas", &key, None).await;
    let ids: Vec<&str> = schemas.expect(200).body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [USER, GROUP]);
    app.stop().await;
}

/// Concurrent membership changes of one group: each either applies whole or
/// is refused (409, to be sent again); none is lost.
async fn concurrent_group_changes_lose_nothing(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (_, key) = scim_key(&app, &acme).await;
    let mut users = Vec::new();
    for n in 0..6 {
        let body = okta_user(&format!("c{n}@acme.test"), &format!("C{n}"));
        let reply = scim(&app, "POST", "/scim/v2/Users", &key, Some(body)).await;
        users.push(reply.expect(201).str("id").to_owned());
    }
    let group = json!({"schemas": [GROUP], "displayName": "viewer"});
    let group = scim(&app, "POST", "/scim/v2/Groups", &key, Some(group)).await;
    let path = format!("/scim/v2/Groups/{}", group.expect(201).str("id"));
    let adds = users.iter().map(|user| {
        let add = json!({"schemas": [PATCH], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": user}]}]});
        scim(&app, "PATCH", &path, &key, Some(add))
    });
    let replies = futures::future::join_all(adds).await;
    let mut applied = Vec::new();
    for (user, reply) in users.iter().zip(&replies) {
        match reply.status {
            200 => applied.push(user.clone()),
            _ => expect_scim_error(reply, 409, None),
        }
    }
    assert!(!applied.is_empty());
    let group = scim(&app, "GET", &path, &key, None).await;
    let mut members: Vec<String> = group.expect(200).body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect();
    members.sort();
    applied.sort();
    assert_eq!(members, applied);
    for user in &users {
        let viewer = roles_of(&app, &acme, user)
            .await
            .contains(&"viewer".to_owned());
        assert_eq!(
            viewer,
            applied.contains(user),
            "{user}: role follows membership"
        );
    }
    app.stop().await;
}

on_both_backends!(
    groups_grant_and_revoke_roles,
    scope_roles_and_tenants,
    concurrent_group_changes_lose_nothing
);
