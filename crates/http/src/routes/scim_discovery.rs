//! SCIM discovery (RFC 7644 §4): what this service provider supports, its
//! resource types and their schemas. Static, and kept true to the
//! implementation: PATCH and `eq` filters yes (at most 200 results a page),
//! ETags yes (weak, also honoured in `If-Match`), bulk, sorting and password
//! changes no; the bearer credential is an API key with `scim:provision`.

use axum::http::StatusCode;
use axum::response::Response;
use karen_domain::scim::{GROUP_SCHEMA, LIST_RESPONSE_SCHEMA, MAX_RESULTS, USER_SCHEMA};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::scim_model::{BASE, ScimError, scim_response};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Authorized, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(service_provider_config))
        .routes(routes!(resource_types))
        .routes(routes!(schemas))
}

const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// One attribute definition (RFC 7643 §7).
fn attribute(name: &str, kind: &str, required: bool, mutability: &str, description: &str) -> Value {
    json!({
        "name": name, "type": kind, "multiValued": false, "description": description,
        "required": required, "caseExact": false, "mutability": mutability,
        "returned": "default", "uniqueness": "none",
    })
}

fn user_schema() -> Value {
    let mut user_name = attribute(
        "userName",
        "string",
        true,
        "readWrite",
        "The user's sign-in email address (Karen signs users in by email); unique in the organisation, ignoring case.",
    );
    user_name["uniqueness"] = json!("server");
    let name = json!({
        "name": "name", "type": "complex", "multiValued": false, "required": false,
        "mutability": "readWrite", "returned": "default", "description": "The parts of the user's name.",
        "subAttributes": [
            attribute("givenName", "string", false, "readWrite", "Given name."),
            attribute("familyName", "string", false, "readWrite", "Family name."),
        ],
    });
    let emails = json!({
        "name": "emails", "type": "complex", "multiValued": true, "required": false,
        "mutability": "readWrite", "returned": "default", "description": "Email addresses (at most 10).",
        "subAttributes": [
            attribute("value", "string", true, "readWrite", "The address."),
            attribute("type", "string", false, "readWrite", "e.g. work."),
            attribute("primary", "boolean", false, "readWrite", "The preferred address."),
        ],
    });
    let groups = json!({
        "name": "groups", "type": "complex", "multiValued": true, "required": false,
        "mutability": "readOnly", "returned": "never",
        "description": "Not returned; read a group's members instead.",
    });
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": USER_SCHEMA, "name": "User", "description": "A user account of the organisation.",
        "attributes": [
            user_name,
            name,
            attribute("displayName", "string", false, "readWrite", "The name Karen shows."),
            emails,
            attribute("active", "boolean", false, "readWrite", "false disables the account and ends its sessions at once."),
            groups,
        ],
        "meta": {"resourceType": "Schema", "location": format!("{BASE}/Schemas/{USER_SCHEMA}")},
    })
}

fn group_schema() -> Value {
    let mut display_name = attribute(
        "displayName",
        "string",
        true,
        "readWrite",
        "The group's name, unique ignoring case. A group named like one of the organisation's roles grants that role to its members.",
    );
    display_name["uniqueness"] = json!("server");
    let members = json!({
        "name": "members", "type": "complex", "multiValued": true, "required": false,
        "mutability": "readWrite", "returned": "default", "description": "The group's users.",
        "subAttributes": [
            attribute("value", "string", true, "immutable", "The user's id."),
            attribute("$ref", "reference", false, "immutable", "The user's URI."),
            attribute("type", "string", false, "immutable", "Always User."),
        ],
    });
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": GROUP_SCHEMA, "name": "Group", "description": "A group of users.",
        "attributes": [display_name, members],
        "meta": {"resourceType": "Schema", "location": format!("{BASE}/Schemas/{GROUP_SCHEMA}")},
    })
}

/// What this SCIM service supports.
#[utoipa::path(get, path = "/scim/v2/ServiceProviderConfig", tag = "scim",
    security(("bearer" = ["scim:provision"])),
    responses((status = 200, description = "the ServiceProviderConfig (RFC 7643 §5)", content_type = "application/scim+json"),
        (status = 401, body = ScimError, content_type = "application/scim+json", description = "no or an invalid credential")))]
async fn service_provider_config(_auth: Authorized<perm::ScimProvision>) -> ApiResult<Response> {
    let body = json!({
        "schemas": [SPC_SCHEMA],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "API key",
            "description": "A Karen API key (krn_…) whose scopes include scim:provision, as 'Authorization: Bearer <key>'.",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{BASE}/ServiceProviderConfig")},
    });
    Ok(scim_response(StatusCode::OK, &body, None))
}

/// The resource types: User and Group.
#[utoipa::path(get, path = "/scim/v2/ResourceTypes", tag = "scim",
    security(("bearer" = ["scim:provision"])),
    responses((status = 200, description = "a ListResponse of ResourceTypes (RFC 7643 §6)", content_type = "application/scim+json")))]
async fn resource_types(_auth: Authorized<perm::ScimProvision>) -> ApiResult<Response> {
    let types = vec![
        json!({"schemas": [RESOURCE_TYPE_SCHEMA], "id": "User", "name": "User", "endpoint": "/Users",
            "description": "User account", "schema": USER_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": format!("{BASE}/ResourceTypes/User")}}),
        json!({"schemas": [RESOURCE_TYPE_SCHEMA], "id": "Group", "name": "Group", "endpoint": "/Groups",
            "description": "Group", "schema": GROUP_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": format!("{BASE}/ResourceTypes/Group")}}),
    ];
    Ok(scim_response(StatusCode::OK, &list(types), None))
}

/// The schemas of User and Group, with the attributes Karen keeps.
#[utoipa::path(get, path = "/scim/v2/Schemas", tag = "scim",
    security(("bearer" = ["scim:provision"])),
    responses((status = 200, description = "a ListResponse of Schemas (RFC 7643 §7)", content_type = "application/scim+json")))]
async fn schemas(_auth: Authorized<perm::ScimProvision>) -> ApiResult<Response> {
    Ok(scim_response(
        StatusCode::OK,
        &list(vec![user_schema(), group_schema()]),
        None,
    ))
}
