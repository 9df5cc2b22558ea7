//! Field-level authorization (ASVS 8.2.3): no request body changes a field
//! its sender may not change. Roles, status, tenant, ids, password hashes and
//! permissions are not fields of any profile or user body (refused as unknown
//! fields, nothing written); roles and status have their own routes, which
//! need `users:manage` and never grant beyond the sender's own rights.

use karen_testkit::{Backend, spawn};
use serde_json::{Value, json};

async fn no_body_changes_a_field_its_sender_may_not(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    let (member_id, member) = app
        .create_user(&acme, "member@acme.test", &["member"])
        .await;
    let (manager_id, manager) = app
        .create_user(&acme, "manager@acme.test", &["user_manager"])
        .await;
    let snapshot = |id: uuid::Uuid| {
        let app = &app;
        let owner = acme.owner_token.clone();
        async move {
            let user = app.get(&format!("/v1/users/{id}"), &owner).await;
            let body = user.expect(200).body.clone();
            (
                body["roles"].clone(),
                body["status"].clone(),
                body["email"].clone(),
            )
        }
    };
    let member_before = snapshot(member_id).await;
    let manager_before = snapshot(manager_id).await;

    // Fields that are not profile fields, smuggled into a profile update.
    let smuggled: [Value; 7] = [
        json!({"roles": ["owner"]}),
        json!({"status": "active"}),
        json!({"tenant_id": other.id}),
        json!({"id": acme.owner_id}),
        json!({"permissions": ["billing:manage"]}),
        json!({"password_hash": "$argon2id$v=19$m=8,t=1,p=1$AAAA$AAAA"}),
        json!({"sessions_valid_after": "2000-01-01T00:00:00Z"}),
    ];
    for extra in &smuggled {
        let mut body = json!({"display_name": "Still Me"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        // A member may not update users at all, not even themselves.
        app.patch(&format!("/v1/users/{member_id}"), &member, body.clone())
            .await
            .expect_problem(403, "permission_denied");
        // A user manager may edit its own profile, but not through these fields.
        app.patch(&format!("/v1/users/{manager_id}"), &manager, body.clone())
            .await
            .expect_problem(422, "validation_failed");
        // Nor create a user carrying them.
        let mut create = body.clone();
        create
            .as_object_mut()
            .unwrap()
            .insert("email".into(), json!("new@acme.test"));
        let created = app.post("/v1/users", &manager, create).await;
        if extra.get("roles").is_some() {
            // `roles` is a field of a new user, limited to the sender's rights.
            created.expect_problem(403, "forbidden");
        } else {
            created.expect_problem(422, "validation_failed");
        }
    }
    // Roles and status through their own routes: a member holds no
    // `users:manage`; a user manager cannot raise itself or reach the owner.
    app.put(
        &format!("/v1/users/{member_id}/roles"),
        &member,
        json!({"roles": ["admin"]}),
    )
    .await
    .expect_problem(403, "permission_denied");
    app.post(&format!("/v1/users/{member_id}/enable"), &member, json!({}))
        .await
        .expect_problem(403, "permission_denied");
    for roles in [json!(["user_manager", "admin"]), json!(["owner"])] {
        app.put(
            &format!("/v1/users/{manager_id}/roles"),
            &manager,
            json!({"roles": roles}),
        )
        .await
        .expect_problem(403, "forbidden");
    }
    app.patch(
        &format!("/v1/users/{}", acme.owner_id),
        &manager,
        json!({"display_name": "Not The Owner"}),
    )
    .await
    .expect_problem(403, "forbidden");
    // Organisation settings are the admins'.
    app.patch("/v1/tenant", &member, json!({"name": "Member Corp"}))
        .await
        .expect_problem(403, "permission_denied");
    // An API key never carries more than its creator holds.
    app.post(
        "/v1/api-keys",
        &member,
        json!({"name": "k", "scopes": ["users:manage"]}),
    )
    .await
    .expect_problem(403, "forbidden");

    assert_eq!(snapshot(member_id).await, member_before);
    assert_eq!(snapshot(manager_id).await, manager_before);
    let user = app
        .get(&format!("/v1/users/{manager_id}"), &acme.owner_token)
        .await;
    assert!(user.expect(200).body["display_name"].is_null());
    // What the manager may change, it can.
    app.patch(
        &format!("/v1/users/{manager_id}"),
        &manager,
        json!({"display_name": "Still Me"}),
    )
    .await
    .expect(200);
    app.stop().await;
}

on_both_backends!(no_body_changes_a_field_its_sender_may_not);
