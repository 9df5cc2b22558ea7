//! SCIM's JSON on the wire: resources rendered with `meta`, list responses,
//! `application/scim+json` responses with ETags, the list query parameters,
//! `attributes`/`excludedAttributes`, and SCIM's error shape (RFC 7644
//! §3.12), into which every problem document of the SCIM routes is rewritten.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use karen_app::scim::{ListQuery, ScimGroupView, ScimList, ScimUserView};
use karen_domain::scim::{
    ERROR_SCHEMA, GROUP_SCHEMA, LIST_RESPONSE_SCHEMA, MAX_RESULTS, ScimErrorType, USER_SCHEMA,
};
use karen_domain::user::UserStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// The media type of SCIM bodies.
pub(crate) const SCIM_JSON: &str = "application/scim+json";
/// Where the SCIM API lives.
pub(crate) const BASE: &str = "/scim/v2";

fn rfc3339(at: OffsetDateTime) -> Value {
    at.format(&time::format_description::well_known::Rfc3339)
        .map_or(Value::Null, Value::String)
}

/// A User resource.
pub(crate) fn user_json(view: &ScimUserView) -> Value {
    let scim = view.scim.as_ref();
    let id = view.user.id;
    let mut user = json!({
        "schemas": [USER_SCHEMA],
        "id": id,
        "userName": view.user.email.as_str(),
        "active": view.user.status == UserStatus::Active,
        "meta": {
            "resourceType": "User",
            "created": rfc3339(view.user.created_at),
            "lastModified": rfc3339(view.last_modified()),
            "location": format!("{BASE}/Users/{id}"),
            "version": view.etag(),
        },
    });
    if let Some(name) = view.user.display_name.as_ref() {
        user["displayName"] = json!(name.as_str());
    }
    if let Some(scim) = scim {
        if let Some(external) = &scim.external_id {
            user["externalId"] = json!(external);
        }
        let mut name = Map::new();
        if let Some(given) = &scim.given_name {
            name.insert("givenName".into(), json!(given));
        }
        if let Some(family) = &scim.family_name {
            name.insert("familyName".into(), json!(family));
        }
        if !name.is_empty() {
            user["name"] = Value::Object(name);
        }
        if !scim.emails.is_empty() {
            user["emails"] = json!(scim.emails);
        }
    }
    if user.get("emails").is_none() {
        // Karen's sign-in email is the user's primary email.
        user["emails"] =
            json!([{"value": view.user.email.as_str(), "type": "work", "primary": true}]);
    }
    user
}

/// A Group resource (members left out when they were not loaded).
pub(crate) fn group_json(view: &ScimGroupView) -> Value {
    let group = &view.group;
    let mut body = json!({
        "schemas": [GROUP_SCHEMA],
        "id": group.id,
        "displayName": group.display_name,
        "meta": {
            "resourceType": "Group",
            "created": rfc3339(group.created_at),
            "lastModified": rfc3339(group.updated_at),
            "location": format!("{BASE}/Groups/{}", group.id),
            "version": view.etag(),
        },
    });
    if let Some(external) = &group.external_id {
        body["externalId"] = json!(external);
    }
    if let Some(members) = &view.members {
        body["members"] = members
            .iter()
            .map(|id| json!({"value": id, "$ref": format!("{BASE}/Users/{id}"), "type": "User"}))
            .collect();
    }
    body
}

/// A ListResponse.
pub(crate) fn list_json<T>(list: &ScimList<T>, render: impl Fn(&T) -> Value) -> Value {
    let resources: Vec<Value> = list.items.iter().map(render).collect();
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": list.total,
        "startIndex": list.start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// A SCIM response: the body as `application/scim+json`, with an ETag when given.
pub(crate) fn scim_response(status: StatusCode, body: &Value, etag: Option<String>) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert(header::ETAG, tag);
    }
    response
}

/// The `If-Match` header, if any.
pub(crate) fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(200).collect())
}

/// The query parameters of a list (RFC 7644 §3.4.2): filter, 1-based
/// pagination, and which attributes to return.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// `userName eq "…"` / `externalId eq "…"` (Users), `displayName eq "…"` / `externalId eq "…"` (Groups).
    filter: Option<String>,
    /// 1-based index of the first result (default 1).
    #[serde(rename = "startIndex")]
    #[param(rename = "startIndex")]
    start_index: Option<String>,
    /// Results per page (default and maximum 200).
    count: Option<String>,
    /// Comma-separated attributes to return (besides `id` and `schemas`).
    attributes: Option<String>,
    /// Comma-separated attributes to leave out (e.g. `members`).
    #[serde(rename = "excludedAttributes")]
    #[param(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

/// Which attributes to return.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResourceParams {
    /// Comma-separated attributes to return (besides `id` and `schemas`).
    attributes: Option<String>,
    /// Comma-separated attributes to leave out (e.g. `members`).
    #[serde(rename = "excludedAttributes")]
    #[param(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

fn number(name: &str, text: Option<&str>, default: i64) -> Result<i64, ApiError> {
    match text {
        None => Ok(default),
        Some(t) => t.trim().parse::<i64>().map_err(|_| {
            ApiError::from(karen_domain::Error::scim(
                ScimErrorType::InvalidValue,
                format!("{name} must be an integer"),
            ))
        }),
    }
}

/// Top-level attribute names of a comma-separated list, lower case
/// (`name.givenName` counts as `name`; schema URN prefixes are dropped).
fn attribute_names(list: Option<&str>) -> Vec<String> {
    list.map(|l| {
        l.split(',')
            .map(|a| {
                let a = a.trim();
                let a = a.rsplit_once(':').map_or(a, |(_, last)| last);
                a.split('.').next().unwrap_or(a).to_ascii_lowercase()
            })
            .filter(|a| !a.is_empty())
            .take(50)
            .collect()
    })
    .unwrap_or_default()
}

/// What to keep of each resource.
#[derive(Debug, Default, Clone)]
pub(crate) struct Projection {
    only: Vec<String>,
    without: Vec<String>,
}

impl Projection {
    /// Whether `attribute` (lower case) is returned.
    pub(crate) fn keeps(&self, attribute: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|a| a == attribute))
            && !self.without.iter().any(|a| a == attribute)
    }

    /// Applies the projection (`id`, `schemas` and `meta` always stay).
    pub(crate) fn apply(&self, mut resource: Value) -> Value {
        if let Some(map) = resource.as_object_mut() {
            map.retain(|key, _| {
                let lower = key.to_ascii_lowercase();
                matches!(lower.as_str(), "id" | "schemas" | "meta") || self.keeps(&lower)
            });
        }
        resource
    }
}

impl ResourceParams {
    pub(crate) fn projection(&self) -> Projection {
        Projection {
            only: attribute_names(self.attributes.as_deref()),
            without: attribute_names(self.excluded_attributes.as_deref()),
        }
    }
}

impl ListParams {
    /// The normalised page (RFC 7644 §3.4.2.4: a start below 1 counts as 1, a
    /// negative count as 0) and the projection.
    pub(crate) fn query(&self) -> Result<(ListQuery, Projection), ApiError> {
        let start_index = number("startIndex", self.start_index.as_deref(), 1)?.max(1);
        let count = number("count", self.count.as_deref(), MAX_RESULTS)?.clamp(0, MAX_RESULTS);
        let filter = self
            .filter
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned);
        let projection = Projection {
            only: attribute_names(self.attributes.as_deref()),
            without: attribute_names(self.excluded_attributes.as_deref()),
        };
        Ok((
            ListQuery {
                filter,
                start_index,
                count,
            },
            projection,
        ))
    }
}

/// On the SCIM routes (and unknown paths or methods under `/scim/`), errors
/// take SCIM's shape; everywhere else responses pass untouched.
pub(crate) async fn scim_errors(request: Request, next: Next) -> Response {
    let scim = request.uri().path().starts_with("/scim/");
    let response = next.run(request).await;
    if scim {
        scim_error_shape(response).await
    } else {
        response
    }
}

/// Rewrites problem documents into SCIM errors (same status and headers):
/// `{"schemas": [Error], "status": "400", "scimType": "invalidFilter", "detail": "…"}`.
/// A value Karen's other routes refuse with 422 is SCIM's 400 `invalidValue`.
async fn scim_error_shape(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let problem: Value = match to_bytes(body, 64 * 1024).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let code = problem["code"].as_str().unwrap_or_default();
    let scim_type = match ScimErrorType::from_code(code) {
        Some(t) => t.scim_type(),
        None => match code {
            "validation_failed" => Some("invalidValue"),
            "malformed_json" | "bad_request" => Some("invalidSyntax"),
            _ => None,
        },
    };
    if parts.status == StatusCode::UNPROCESSABLE_ENTITY {
        parts.status = StatusCode::BAD_REQUEST;
    }
    let mut shaped = json!({
        "schemas": [ERROR_SCHEMA],
        "status": parts.status.as_u16().to_string(),
        "detail": problem["detail"],
    });
    if let Some(scim_type) = scim_type {
        shaped["scimType"] = json!(scim_type);
    }
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(shaped.to_string()))
}

/// A SCIM error response (RFC 7644 §3.12).
#[derive(Serialize, ToSchema)]
pub(crate) struct ScimError {
    /// `["urn:ietf:params:scim:api:messages:2.0:Error"]`.
    schemas: Vec<String>,
    /// The HTTP status, as a string.
    status: String,
    /// `invalidFilter`, `uniqueness`, `invalidValue`, `invalidSyntax`,
    /// `invalidPath`, `noTarget`, `mutability`, `tooMany`.
    #[serde(rename = "scimType")]
    scim_type: Option<String>,
    detail: String,
}

/// A name (RFC 7643 §4.1.1).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScimNameDoc {
    given_name: Option<String>,
    family_name: Option<String>,
}

/// An email address.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScimEmailDoc {
    value: String,
    /// e.g. `work`.
    #[serde(rename = "type")]
    kind: Option<String>,
    primary: Option<bool>,
}

/// A SCIM User (RFC 7643 §4.1). `userName` is the sign-in email. Other core
/// attributes and the enterprise extension are accepted and not stored;
/// attributes outside those schemas are refused.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScimUserDoc {
    /// Must contain `urn:ietf:params:scim:schemas:core:2.0:User`.
    schemas: Vec<String>,
    /// Read-only.
    id: Option<String>,
    external_id: Option<String>,
    user_name: String,
    name: Option<ScimNameDoc>,
    display_name: Option<String>,
    emails: Option<Vec<ScimEmailDoc>>,
    /// `false` disables the account and ends its sessions.
    active: Option<bool>,
    /// Read-only: `resourceType`, `created`, `lastModified`, `location`, `version`.
    #[schema(value_type = Option<Object>)]
    meta: Option<Value>,
}

/// A member of a group.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScimMemberDoc {
    /// The user's id.
    value: String,
}

/// A SCIM Group (RFC 7643 §4.2). A group named like one of the tenant's roles
/// (ignoring case) grants that role to its members.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScimGroupDoc {
    /// Must contain `urn:ietf:params:scim:schemas:core:2.0:Group`.
    schemas: Vec<String>,
    id: Option<String>,
    external_id: Option<String>,
    display_name: String,
    members: Option<Vec<ScimMemberDoc>>,
    #[schema(value_type = Option<Object>)]
    meta: Option<Value>,
}

/// A PATCH request (RFC 7644 §3.5.2): `op` is `add`, `replace` or `remove` in
/// any case; `path` such as `active`, `name.givenName`,
/// `emails[type eq "work"].value`, `members` or `members[value eq "<id>"]`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScimPatchDoc {
    /// Must contain `urn:ietf:params:scim:api:messages:2.0:PatchOp`.
    schemas: Vec<String>,
    #[serde(rename = "Operations")]
    #[schema(value_type = Vec<Object>)]
    operations: Vec<Value>,
}

/// A ListResponse (RFC 7644 §3.4.2).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScimListDoc {
    schemas: Vec<String>,
    total_results: i64,
    /// 1-based.
    start_index: i64,
    items_per_page: i64,
    #[serde(rename = "Resources")]
    #[schema(value_type = Vec<Object>)]
    resources: Vec<Value>,
}
