//! The SCIM routes in the cross-tenant sweep: tenant A's owner (access token)
//! and A's SCIM key against B's provisioned user and group. Foreign ids answer
//! the same SCIM 404 as missing ones, lists and filters never show B's rows,
//! and B's user, group and granted role are unchanged afterwards.

use karen_testkit::{PASSWORD, TestApp, TestTenant};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Tracker;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn user(email: &str) -> Value {
    json!({"schemas": [USER], "userName": email, "externalId": "shared-ext", "active": true})
}

#[track_caller]
fn scim_404(reply: &karen_testkit::Reply, what: &str) -> String {
    assert_eq!(reply.status, 404, "{what}: {}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("application/scim+json"),
        "{what}"
    );
    assert_eq!(reply.body["status"], "404", "{what}");
    reply.body["detail"].as_str().unwrap_or_default().to_owned()
}

/// B's provisioned user and group, and the SCIM keys of both tenants.
pub(super) struct Seed {
    a_key: String,
    b_key: String,
    b_user: String,
    b_group: String,
}

pub(super) async fn seed(app: &TestApp, alpha: &TestTenant, bravo: &TestTenant) -> Seed {
    let (_, b_key) = app
        .create_api_key(
            &bravo.owner_token,
            json!({"name": "b idp", "scopes": ["scim:provision"]}),
        )
        .await;
    let (_, a_key) = app
        .create_api_key(
            &alpha.owner_token,
            json!({"name": "a idp", "scopes": ["scim:provision"]}),
        )
        .await;
    let b_user = app
        .post("/scim/v2/Users", &b_key, user("scim@bravo.test"))
        .await;
    let b_user = b_user.expect(201).str("id").to_owned();
    let b_group = app
        .post(
            "/scim/v2/Groups",
            &b_key,
            json!({"schemas": [GROUP], "displayName": "Analyst", "externalId": "shared-ext",
                "members": [{"value": b_user}]}),
        )
        .await;
    let b_group = b_group.expect(201).str("id").to_owned();
    Seed {
        a_key,
        b_key,
        b_user,
        b_group,
    }
}

pub(super) async fn sweep(
    t: &mut Tracker<'_>,
    app: &TestApp,
    alpha: &TestTenant,
    bravo: &TestTenant,
    seed: &Seed,
) {
    let Seed {
        a_key,
        b_key,
        b_user,
        b_group,
    } = seed;
    let patch_off = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]});
    let patch_members = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "members", "value": []}]});
    for token in [alpha.owner_token.as_str(), a_key.as_str()] {
        for (method, template, placeholder, foreign, body) in [
            (
                "GET",
                "/scim/v2/Users/{user_id}",
                "{user_id}",
                &b_user,
                None,
            ),
            (
                "PUT",
                "/scim/v2/Users/{user_id}",
                "{user_id}",
                &b_user,
                Some(user("scim@bravo.test")),
            ),
            (
                "PATCH",
                "/scim/v2/Users/{user_id}",
                "{user_id}",
                &b_user,
                Some(patch_off.clone()),
            ),
            (
                "DELETE",
                "/scim/v2/Users/{user_id}",
                "{user_id}",
                &b_user,
                None,
            ),
            (
                "GET",
                "/scim/v2/Groups/{group_id}",
                "{group_id}",
                &b_group,
                None,
            ),
            (
                "PUT",
                "/scim/v2/Groups/{group_id}",
                "{group_id}",
                &b_group,
                Some(json!({"schemas": [GROUP], "displayName": "Analyst"})),
            ),
            (
                "PATCH",
                "/scim/v2/Groups/{group_id}",
                "{group_id}",
                &b_group,
                Some(patch_members.clone()),
            ),
            (
                "DELETE",
                "/scim/v2/Groups/{group_id}",
                "{group_id}",
                &b_group,
                None,
            ),
        ] {
            let missing = Uuid::now_v7().to_string();
            let what = format!("{method} {template}");
            let foreign_reply = t
                .call(
                    method,
                    template,
                    &template.replace(placeholder, foreign),
                    token,
                    body.clone(),
                )
                .await;
            let missing_reply = t
                .call(
                    method,
                    template,
                    &template.replace(placeholder, &missing),
                    token,
                    body,
                )
                .await;
            assert_eq!(
                scim_404(&foreign_reply, &what),
                scim_404(&missing_reply, &what),
                "{what}"
            );
        }
        for (template, query) in [
            ("/scim/v2/Users", String::new()),
            (
                "/scim/v2/Users",
                "?filter=userName%20eq%20%22scim%40bravo.test%22".to_owned(),
            ),
            (
                "/scim/v2/Users",
                "?filter=externalId%20eq%20%22shared-ext%22".to_owned(),
            ),
            ("/scim/v2/Groups", String::new()),
            (
                "/scim/v2/Groups",
                "?filter=displayName%20eq%20%22Analyst%22".to_owned(),
            ),
            (
                "/scim/v2/Groups",
                "?filter=externalId%20eq%20%22shared-ext%22".to_owned(),
            ),
        ] {
            let listed = t
                .call("GET", template, &format!("{template}{query}"), token, None)
                .await;
            listed.expect(200);
            assert!(
                !listed.text.contains(b_user.as_str()) && !listed.text.contains(b_group.as_str()),
                "B's rows listed for A: {template}{query}: {}",
                listed.text
            );
        }
        for path in [
            "/scim/v2/ServiceProviderConfig",
            "/scim/v2/ResourceTypes",
            "/scim/v2/Schemas",
        ] {
            t.call("GET", path, path, token, None).await.expect(200);
        }
        // B's user cannot be made a member of A's group.
        let stolen = json!({"schemas": [GROUP], "displayName": format!("steal-{}", Uuid::now_v7()),
            "members": [{"value": b_user}]});
        let reply = t
            .call(
                "POST",
                "/scim/v2/Groups",
                "/scim/v2/Groups",
                token,
                Some(stolen),
            )
            .await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert_eq!(reply.body["scimType"], "invalidValue");
    }
    // The same names in A are A's own.
    let mine = t
        .call(
            "POST",
            "/scim/v2/Users",
            "/scim/v2/Users",
            a_key,
            Some(user("scim@bravo.test")),
        )
        .await;
    let mine = mine.expect(201).str("id").to_owned();
    assert_ne!(&mine, b_user);
    let group = json!({"schemas": [GROUP], "displayName": "Analyst", "members": [{"value": mine}]});
    let a_group = t
        .call(
            "POST",
            "/scim/v2/Groups",
            "/scim/v2/Groups",
            a_key,
            Some(group),
        )
        .await;
    assert_ne!(a_group.expect(201).str("id"), b_group.as_str());

    // B is untouched: its user active, its group whole, the group's role still granted.
    let b_after = app.get(&format!("/scim/v2/Users/{b_user}"), b_key).await;
    assert_eq!(b_after.expect(200).body["active"], true);
    let b_group_after = app.get(&format!("/scim/v2/Groups/{b_group}"), b_key).await;
    assert_eq!(
        b_group_after.expect(200).body["members"][0]["value"],
        b_user.as_str()
    );
    let b_owner = app.token("bravo", &bravo.owner_email, PASSWORD).await;
    let b_roles = app.get(&format!("/v1/users/{b_user}"), &b_owner).await;
    assert!(
        b_roles.expect(200).text.contains("analyst"),
        "{}",
        b_roles.text
    );
}
