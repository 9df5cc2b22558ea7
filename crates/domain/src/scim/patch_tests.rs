//! PATCH as Okta and Entra send it.
use serde_json::json;

use super::*;
use crate::UserId;
use crate::scim::resource::UserAttributes;
use crate::values::Email;

fn ops(list: Value) -> Vec<PatchOperation> {
    parse(&json!({"schemas": [PATCH_OP_SCHEMA], "Operations": list})).unwrap()
}

fn user() -> UserDraft {
    UserDraft::from(UserAttributes {
        user_name: Email::parse("ada@example.com").unwrap(),
        external_id: None,
        display_name: None,
        given_name: None,
        family_name: None,
        emails: Vec::new(),
        active: true,
    })
}

#[test]
fn okta_and_entra_deactivate() {
    for list in [
        json!([{"op": "replace", "value": {"active": false}}]),
        json!([{"op": "Replace", "value": {"active": false}}]),
        json!([{"op": "Replace", "path": "active", "value": "False"}]),
        json!([{"op": "replace", "path": "active", "value": false}]),
    ] {
        let mut draft = user();
        apply_to_user(&mut draft, &ops(list)).unwrap();
        assert_eq!(draft.active, Some(false));
    }
}

#[test]
fn entra_attribute_paths() {
    let mut draft = user();
    apply_to_user(
        &mut draft,
        &ops(json!([
            {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "ada@work.example"},
            {"op": "Replace", "path": "name.givenName", "value": "Ada"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"},
            {"op": "Replace", "path": "title", "value": "Countess"},
            {"op": "Replace", "path": "displayName", "value": "Ada L"},
            {"op": "Replace", "path": "externalId", "value": "e-1"}
        ])),
    )
    .unwrap();
    assert_eq!(draft.emails[0].value, "ada@work.example");
    assert_eq!(draft.given_name.as_deref(), Some("Ada"));
    assert_eq!(draft.external_id.as_deref(), Some("e-1"));
    let remove = ops(json!([{"op": "Remove", "path": "emails[type eq \"home\"]"}]));
    assert_eq!(
        apply_to_user(&mut draft, &remove).unwrap_err().code(),
        "scim_no_target"
    );
    for (list, code) in [
        (
            json!([{"op": "replace", "path": "favourite", "value": 1}]),
            "scim_invalid_path",
        ),
        (
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            "scim_mutability",
        ),
        (
            json!([{"op": "remove", "path": "userName"}]),
            "scim_invalid_value",
        ),
    ] {
        assert_eq!(
            apply_to_user(&mut user(), &ops(list)).unwrap_err().code(),
            code
        );
    }
}

#[test]
fn group_members() {
    let (a, b) = (UserId::generate(), UserId::generate());
    let mut draft = GroupDraft {
        id: Some("g".into()),
        display_name: Some("admin".into()),
        external_id: None,
        members: vec![a],
    };
    apply_to_group(
        &mut draft,
        &ops(json!([
            {"op": "Add", "path": "members", "value": [{"value": b.to_string()}]},
            {"op": "replace", "value": {"id": "g", "displayName": "Admins"}}
        ])),
    )
    .unwrap();
    assert_eq!(draft.members, vec![a, b]);
    assert_eq!(draft.display_name.as_deref(), Some("Admins"));
    let okta_remove = ops(json!([{"op": "remove", "path": format!("members[value eq \"{a}\"]")}]));
    apply_to_group(&mut draft, &okta_remove).unwrap();
    assert_eq!(
        apply_to_group(&mut draft, &okta_remove).unwrap_err().code(),
        "scim_no_target"
    );
    let entra_remove =
        ops(json!([{"op": "Remove", "path": "members", "value": [{"value": b.to_string()}]}]));
    apply_to_group(&mut draft, &entra_remove).unwrap();
    assert!(draft.members.is_empty());
}

#[test]
fn bad_bodies() {
    for body in [
        json!({"Operations": [{"op": "add", "value": {}}]}),
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": []}),
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "add"}]}),
    ] {
        assert_eq!(
            parse(&body).unwrap_err().code(),
            "scim_invalid_value",
            "{body}"
        );
    }
    let unknown = parse(&json!({"schemas": [PATCH_OP_SCHEMA], "zz": 1})).unwrap_err();
    assert_eq!(unknown.code(), "scim_invalid_syntax");
    let op =
        parse(&json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "move", "path": "a"}]}));
    assert_eq!(op.unwrap_err().code(), "scim_invalid_syntax");
}
