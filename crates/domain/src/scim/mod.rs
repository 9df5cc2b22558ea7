//! SCIM 2.0 provisioning (RFC 7643/7644): what Karen stores of a provisioned
//! user or group, the protocol's error types, and the pure parts of the
//! protocol: filters ([`filter`]), resource bodies ([`resource`]) and PATCH
//! operations ([`patch`]). Attribute names are matched case-insensitively, as
//! the RFC requires; no SQL is ever built from any of it.

pub mod filter;
pub mod patch;
pub mod resource;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::values::printable;
use crate::{Error, ScimGroupId, TenantId, UserId};

/// The core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The enterprise User extension (accepted; its attributes are not stored).
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// The core Group schema.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// A list response.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// A PATCH request.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// An error response.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The most results one list page returns (`count` is capped to it).
pub const MAX_RESULTS: i64 = 200;
/// The most operations one PATCH request may carry.
pub const MAX_OPERATIONS: usize = 1000;
/// The most members one request may name.
pub const MAX_MEMBERS: usize = 1000;
/// The most email addresses a user may have.
pub const MAX_EMAILS: usize = 10;
/// The longest `externalId`, `name.givenName`, `name.familyName` or email `type`.
pub const MAX_TEXT: usize = 256;

/// The `scimType` of an error response (RFC 7644 §3.12), plus the
/// precondition failure of a stale `If-Match` (412, no `scimType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimErrorType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVersion,
    /// `If-Match` names another version than the current one.
    PreconditionFailed,
}

impl ScimErrorType {
    /// The `scimType` value (`None` for a precondition failure).
    pub const fn scim_type(self) -> Option<&'static str> {
        Some(match self {
            Self::InvalidFilter => "invalidFilter",
            Self::TooMany => "tooMany",
            Self::Uniqueness => "uniqueness",
            Self::Mutability => "mutability",
            Self::InvalidSyntax => "invalidSyntax",
            Self::InvalidPath => "invalidPath",
            Self::NoTarget => "noTarget",
            Self::InvalidValue => "invalidValue",
            Self::InvalidVersion => "invalidVers",
            Self::PreconditionFailed => return None,
        })
    }

    /// Karen's stable error code.
    pub const fn code(self) -> &'static str {
        match self {
            Self::InvalidFilter => "scim_invalid_filter",
            Self::TooMany => "scim_too_many",
            Self::Uniqueness => "scim_uniqueness",
            Self::Mutability => "scim_mutability",
            Self::InvalidSyntax => "scim_invalid_syntax",
            Self::InvalidPath => "scim_invalid_path",
            Self::NoTarget => "scim_no_target",
            Self::InvalidValue => "scim_invalid_value",
            Self::InvalidVersion => "scim_invalid_version",
            Self::PreconditionFailed => "scim_precondition_failed",
        }
    }

    /// The type whose [`code`](Self::code) this is.
    pub fn from_code(code: &str) -> Option<Self> {
        [
            Self::InvalidFilter,
            Self::TooMany,
            Self::Uniqueness,
            Self::Mutability,
            Self::InvalidSyntax,
            Self::InvalidPath,
            Self::NoTarget,
            Self::InvalidValue,
            Self::InvalidVersion,
            Self::PreconditionFailed,
        ]
        .into_iter()
        .find(|t| t.code() == code)
    }

    /// The HTTP status.
    pub const fn status(self) -> u16 {
        match self {
            Self::Uniqueness => 409,
            Self::PreconditionFailed => 412,
            _ => 400,
        }
    }
}

/// Shorthand for a SCIM error.
pub(crate) fn fail(scim_type: ScimErrorType, message: impl Into<String>) -> Error {
    Error::scim(scim_type, message)
}

/// One email address of a provisioned user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimEmail {
    pub value: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub primary: bool,
}

/// What Karen keeps of a user beyond its account: the identity provider's id,
/// the name parts and emails it sent. A row exists once SCIM managed the user;
/// `deleted_at` is set when the provider deleted it (the account stays,
/// disabled, and is hidden from SCIM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimUserRecord {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub external_id: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub emails: Vec<ScimEmail>,
    /// Counts changes made through SCIM (part of the ETag).
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub deleted_at: Option<OffsetDateTime>,
}

/// A provisioned group. A group whose display name equals (ignoring case) the
/// name of one of the tenant's roles grants that role to its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimGroup {
    pub id: ScimGroupId,
    pub tenant_id: TenantId,
    pub display_name: String,
    pub external_id: Option<String>,
    /// Counts changes (the ETag).
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl ScimGroup {
    /// The role name this group maps to (its display name in lower case).
    pub fn role_key(&self) -> String {
        self.display_name.to_lowercase()
    }
}

/// A weak ETag of a version string.
pub fn etag(version: &str) -> String {
    format!("W/\"{version}\"")
}

/// Checks an `If-Match` header value against the current ETag (`*` matches all).
pub fn check_if_match(if_match: Option<&str>, current: &str) -> Result<(), Error> {
    let Some(header) = if_match else {
        return Ok(());
    };
    let matches = header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.trim_start_matches("W/") == current.trim_start_matches("W/")
    });
    if matches {
        Ok(())
    } else {
        Err(fail(
            ScimErrorType::PreconditionFailed,
            format!(
                "the resource changed: its version is {current}, not {}; read it again",
                printable(header, 80)
            ),
        ))
    }
}

/// A bounded, control-free text value of attribute `name`.
pub(crate) fn text(name: &str, value: &str, max: usize) -> Result<String, Error> {
    let trimmed = value.trim();
    if trimmed.chars().count() > max {
        return Err(fail(
            ScimErrorType::InvalidValue,
            format!("{name} is longer than {max} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(fail(
            ScimErrorType::InvalidValue,
            format!("{name} must not contain control characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_compares_weak_tags() {
        let current = etag("7");
        assert!(check_if_match(None, &current).is_ok());
        assert!(check_if_match(Some("*"), &current).is_ok());
        assert!(check_if_match(Some("W/\"7\""), &current).is_ok());
        assert!(check_if_match(Some("\"7\""), &current).is_ok());
        let stale = check_if_match(Some("W/\"6\""), &current).unwrap_err();
        assert_eq!(stale.code(), "scim_precondition_failed");
    }

    #[test]
    fn codes_round_trip() {
        for t in [
            ScimErrorType::InvalidFilter,
            ScimErrorType::PreconditionFailed,
        ] {
            assert_eq!(ScimErrorType::from_code(t.code()), Some(t));
        }
        assert_eq!(ScimErrorType::Uniqueness.status(), 409);
    }
}
