//! SCIM resource bodies (RFC 7643 §4): a User or Group as a client sends it
//! (POST, PUT, or the values of a PATCH), checked attribute by attribute.
//! Attribute names match ignoring case. Attributes of the core schema (and of
//! the enterprise extension) that Karen does not keep are accepted and not
//! stored, so identity providers' default mappings work; names outside the
//! schemas are refused (`invalidSyntax`).

use serde_json::{Map, Value};

use super::{
    ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, MAX_EMAILS, MAX_MEMBERS, MAX_TEXT, ScimEmail,
    ScimErrorType, USER_SCHEMA, fail, text,
};
use crate::values::{DisplayName, Email, printable};
use crate::{Error, UserId};

/// Core User attributes that are accepted and not stored.
const IGNORED_USER_ATTRIBUTES: &[&str] = &[
    "nickname",
    "profileurl",
    "title",
    "usertype",
    "preferredlanguage",
    "locale",
    "timezone",
    "phonenumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509certificates",
];

/// Sub-attributes of `name` that are accepted and not stored.
const IGNORED_NAME_PARTS: &[&str] = &[
    "formatted",
    "middlename",
    "honorificprefix",
    "honorificsuffix",
];

/// What a top-level User attribute name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserAttribute {
    Schemas,
    Id,
    Meta,
    UserName,
    ExternalId,
    DisplayName,
    Name,
    Emails,
    Active,
    Password,
    Groups,
    /// Known to the schemas, not stored.
    Ignored,
}

/// Classifies a User attribute name (`None`: not in any supported schema).
pub(crate) fn user_attribute(name: &str) -> Option<UserAttribute> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(&ENTERPRISE_USER_SCHEMA.to_ascii_lowercase()) {
        return Some(UserAttribute::Ignored);
    }
    Some(match lower.as_str() {
        "schemas" => UserAttribute::Schemas,
        "id" => UserAttribute::Id,
        "meta" => UserAttribute::Meta,
        "username" => UserAttribute::UserName,
        "externalid" => UserAttribute::ExternalId,
        "displayname" => UserAttribute::DisplayName,
        "name" => UserAttribute::Name,
        "emails" => UserAttribute::Emails,
        "active" => UserAttribute::Active,
        "password" => UserAttribute::Password,
        "groups" => UserAttribute::Groups,
        other if IGNORED_USER_ATTRIBUTES.contains(&other) => UserAttribute::Ignored,
        _ => return None,
    })
}

/// The object of a body, or `invalidSyntax`.
pub(crate) fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, Error> {
    value.as_object().ok_or_else(|| {
        fail(
            ScimErrorType::InvalidSyntax,
            format!("{what} must be a JSON object"),
        )
    })
}

fn unknown(name: &str, schema: &str) -> Error {
    fail(
        ScimErrorType::InvalidSyntax,
        format!(
            "unknown attribute '{}': it is not in the schema {schema}",
            printable(name, 80)
        ),
    )
}

fn invalid(message: impl Into<String>) -> Error {
    fail(ScimErrorType::InvalidValue, message)
}

/// A string value (`None` for null).
pub(crate) fn optional_text(
    name: &str,
    value: &Value,
    max: usize,
) -> Result<Option<String>, Error> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => {
            let t = text(name, s, max)?;
            Ok((!t.is_empty()).then_some(t))
        }
        _ => Err(invalid(format!("{name} must be a string"))),
    }
}

/// A boolean, also as the strings "true"/"false" in any case (Entra sends "False").
pub(crate) fn boolean(name: &str, value: &Value) -> Result<bool, Error> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(invalid(format!("{name} must be true or false"))),
    }
}

/// The user name: an email address, since Karen signs users in by email.
pub(crate) fn user_name(value: &Value) -> Result<Email, Error> {
    let Value::String(s) = value else {
        return Err(invalid("userName must be a string"));
    };
    Email::parse(s).map_err(|_| {
        invalid(format!(
            "userName '{}' is not an email address; Karen signs users in by email, so map userName to the user's email (or UPN)",
            printable(s, 80)
        ))
    })
}

fn display_name(value: &Value) -> Result<Option<String>, Error> {
    match optional_text("displayName", value, 200)? {
        Some(name) => DisplayName::parse(&name)
            .map(|d| Some(d.as_str().to_owned()))
            .map_err(|e| invalid(e.to_string())),
        None => Ok(None),
    }
}

fn check_schemas(value: &Value, required: &str, allowed: &[&str]) -> Result<(), Error> {
    let list = value
        .as_array()
        .filter(|l| l.len() <= 8)
        .ok_or_else(|| invalid("schemas must be a list of at most 8 schema URNs"))?;
    let mut has_required = false;
    for item in list {
        let urn = item
            .as_str()
            .ok_or_else(|| invalid("schemas must be a list of strings"))?;
        if urn.eq_ignore_ascii_case(required) {
            has_required = true;
        } else if !allowed.iter().any(|a| a.eq_ignore_ascii_case(urn)) {
            return Err(invalid(format!(
                "the schema '{}' is not supported (GET /scim/v2/Schemas lists them)",
                printable(urn, 100)
            )));
        }
    }
    if has_required {
        Ok(())
    } else {
        Err(invalid(format!("schemas must contain {required}")))
    }
}

/// One email object (or the list's items).
pub(crate) fn email(value: &Value) -> Result<ScimEmail, Error> {
    let map = object(value, "each email")?;
    let mut email = ScimEmail {
        value: String::new(),
        kind: None,
        primary: false,
    };
    for (key, item) in map {
        match key.to_ascii_lowercase().as_str() {
            "value" => email.value = email_value(item)?,
            "type" => email.kind = optional_text("emails.type", item, MAX_TEXT)?,
            "primary" => email.primary = boolean("emails.primary", item)?,
            "display" => {}
            _ => return Err(unknown(&format!("emails.{key}"), USER_SCHEMA)),
        }
    }
    if email.value.is_empty() {
        return Err(invalid("each email needs a value"));
    }
    Ok(email)
}

/// An email address value.
pub(crate) fn email_value(value: &Value) -> Result<String, Error> {
    let Value::String(s) = value else {
        return Err(invalid("emails.value must be a string"));
    };
    Email::parse(s)
        .map(|e| e.as_str().to_owned())
        .map_err(|e| invalid(e.to_string()))
}

/// A list of emails (a single object counts as a list of one).
pub(crate) fn emails(value: &Value) -> Result<Vec<ScimEmail>, Error> {
    let items: Vec<&Value> = match value {
        Value::Null => Vec::new(),
        Value::Array(list) => list.iter().collect(),
        other => vec![other],
    };
    if items.len() > MAX_EMAILS {
        return Err(invalid(format!("a user has at most {MAX_EMAILS} emails")));
    }
    let mut out: Vec<ScimEmail> = Vec::new();
    for item in items {
        let email = email(item)?;
        out.retain(|e| e.value != email.value);
        out.push(email);
    }
    Ok(out)
}

/// A user as a client describes it; absent attributes are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDraft {
    /// An `id` the body carried (read-only; compared with the path's).
    pub id: Option<String>,
    pub user_name: Option<Email>,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub emails: Vec<ScimEmail>,
    pub active: Option<bool>,
}

/// A user's attributes, complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAttributes {
    pub user_name: Email,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub emails: Vec<ScimEmail>,
    pub active: bool,
}

impl UserDraft {
    /// Reads a whole User body (POST or PUT).
    pub fn from_json(body: &Value) -> Result<Self, Error> {
        let map = object(body, "a User")?;
        // Unknown names first, so the error is about them rather than what is missing.
        if let Some(name) = map.keys().find(|k| user_attribute(k).is_none()) {
            return Err(unknown(name, USER_SCHEMA));
        }
        let mut draft = UserDraft::default();
        let mut has_schemas = false;
        for (key, value) in map {
            match user_attribute(key) {
                Some(UserAttribute::Schemas) => {
                    check_schemas(value, USER_SCHEMA, &[ENTERPRISE_USER_SCHEMA])?;
                    has_schemas = true;
                }
                Some(UserAttribute::Id) => draft.id = optional_text("id", value, 100)?,
                // Read-only or not kept: what the server says wins.
                Some(UserAttribute::Meta | UserAttribute::Groups | UserAttribute::Ignored) => {}
                _ => draft.set(key, value)?,
            }
        }
        if !has_schemas {
            return Err(invalid(format!("schemas must contain {USER_SCHEMA}")));
        }
        Ok(draft)
    }

    /// Sets one writable top-level attribute (`null` clears it).
    pub(crate) fn set(&mut self, key: &str, value: &Value) -> Result<(), Error> {
        match user_attribute(key) {
            Some(UserAttribute::UserName) => self.user_name = Some(user_name(value)?),
            Some(UserAttribute::ExternalId) => {
                self.external_id = optional_text("externalId", value, MAX_TEXT)?;
            }
            Some(UserAttribute::DisplayName) => self.display_name = display_name(value)?,
            Some(UserAttribute::Active) => self.active = Some(boolean("active", value)?),
            Some(UserAttribute::Emails) => self.emails = emails(value)?,
            Some(UserAttribute::Name) => {
                if value.is_null() {
                    self.given_name = None;
                    self.family_name = None;
                } else {
                    for (part, item) in object(value, "name")? {
                        self.set_name_part(part, item)?;
                    }
                }
            }
            Some(UserAttribute::Password) => {
                return Err(invalid(
                    "Karen does not take passwords through SCIM: provisioned users sign in with single sign-on; turn password sync off",
                ));
            }
            Some(UserAttribute::Ignored) => {}
            Some(
                UserAttribute::Id
                | UserAttribute::Meta
                | UserAttribute::Groups
                | UserAttribute::Schemas,
            ) => {
                return Err(fail(
                    ScimErrorType::Mutability,
                    format!("{key} is read-only"),
                ));
            }
            None => return Err(unknown(key, USER_SCHEMA)),
        }
        Ok(())
    }

    /// Sets `name.<part>` (`null` clears it).
    pub(crate) fn set_name_part(&mut self, part: &str, value: &Value) -> Result<(), Error> {
        match part.to_ascii_lowercase().as_str() {
            "givenname" => self.given_name = optional_text("name.givenName", value, MAX_TEXT)?,
            "familyname" => self.family_name = optional_text("name.familyName", value, MAX_TEXT)?,
            other if IGNORED_NAME_PARTS.contains(&other) => {}
            _ => return Err(unknown(&format!("name.{part}"), USER_SCHEMA)),
        }
        Ok(())
    }

    /// The complete attributes (`userName` required; `active` defaults to true).
    pub fn finish(self) -> Result<UserAttributes, Error> {
        let user_name = self
            .user_name
            .ok_or_else(|| invalid("userName is required"))?;
        Ok(UserAttributes {
            user_name,
            external_id: self.external_id,
            display_name: self.display_name,
            given_name: self.given_name,
            family_name: self.family_name,
            emails: self.emails,
            active: self.active.unwrap_or(true),
        })
    }
}

impl From<UserAttributes> for UserDraft {
    fn from(a: UserAttributes) -> Self {
        Self {
            id: None,
            user_name: Some(a.user_name),
            external_id: a.external_id,
            display_name: a.display_name,
            given_name: a.given_name,
            family_name: a.family_name,
            emails: a.emails,
            active: Some(a.active),
        }
    }
}

impl UserAttributes {
    /// The display name Karen shows: `displayName`, else the name parts.
    pub fn karen_display_name(&self) -> Option<String> {
        self.display_name.clone().or_else(|| {
            let joined = [self.given_name.as_deref(), self.family_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (!joined.is_empty()).then_some(joined)
        })
    }
}

/// A member's user id (`value` of a member object).
pub(crate) fn member_id(value: &Value) -> Result<UserId, Error> {
    let text = match value {
        Value::String(s) => s.as_str(),
        _ => return Err(invalid("members[].value must be a user id string")),
    };
    UserId::parse(text).map_err(|_| {
        invalid(format!(
            "no user with id '{}' in this organisation",
            printable(text, 60)
        ))
    })
}

/// Member ids of a `members` value (a list of `{"value": id}`, or one object).
pub(crate) fn members(value: &Value) -> Result<Vec<UserId>, Error> {
    let items: Vec<&Value> = match value {
        Value::Null => Vec::new(),
        Value::Array(list) => list.iter().collect(),
        other => vec![other],
    };
    if items.len() > MAX_MEMBERS {
        return Err(invalid(format!(
            "at most {MAX_MEMBERS} members per request; send the rest in further requests"
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let map = object(item, "each member")?;
        let mut id = None;
        for (key, v) in map {
            match key.to_ascii_lowercase().as_str() {
                "value" => id = Some(member_id(v)?),
                "display" | "$ref" | "type" => {}
                _ => return Err(unknown(&format!("members.{key}"), GROUP_SCHEMA)),
            }
        }
        let id = id.ok_or_else(|| invalid("each member needs a value (the user's id)"))?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// A group as a client describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupDraft {
    pub id: Option<String>,
    pub display_name: Option<String>,
    pub external_id: Option<String>,
    pub members: Vec<UserId>,
}

/// A group name: bounded, non-empty, without control characters.
pub(crate) fn group_name(value: &Value) -> Result<String, Error> {
    optional_text("displayName", value, 200)?.ok_or_else(|| invalid("displayName is required"))
}

impl GroupDraft {
    /// Reads a whole Group body (POST or PUT).
    pub fn from_json(body: &Value) -> Result<Self, Error> {
        let map = object(body, "a Group")?;
        let known = |k: &str| {
            matches!(
                k.to_ascii_lowercase().as_str(),
                "schemas" | "id" | "meta" | "displayname" | "externalid" | "members"
            )
        };
        if let Some(name) = map.keys().find(|k| !known(k)) {
            return Err(unknown(name, GROUP_SCHEMA));
        }
        let mut draft = GroupDraft::default();
        let mut has_schemas = false;
        for (key, value) in map {
            match key.to_ascii_lowercase().as_str() {
                "schemas" => {
                    check_schemas(value, GROUP_SCHEMA, &[])?;
                    has_schemas = true;
                }
                "id" => draft.id = optional_text("id", value, 100)?,
                "displayname" => draft.display_name = Some(group_name(value)?),
                "externalid" => draft.external_id = optional_text("externalId", value, MAX_TEXT)?,
                "members" => draft.members = members(value)?,
                _ => {}
            }
        }
        if !has_schemas {
            return Err(invalid(format!("schemas must contain {GROUP_SCHEMA}")));
        }
        if draft.display_name.is_none() {
            return Err(invalid("displayName is required"));
        }
        Ok(draft)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_okta_and_entra_users() {
        let okta = json!({"schemas": [USER_SCHEMA], "userName": "Ada@Example.com",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"primary": true, "value": "ada@example.com", "type": "work"}],
            "displayName": "Ada Lovelace", "locale": "en-US", "externalId": "00u1",
            "groups": [], "active": true});
        let a = UserDraft::from_json(&okta).unwrap().finish().unwrap();
        assert_eq!(a.user_name.as_str(), "ada@example.com");
        assert_eq!(a.given_name.as_deref(), Some("Ada"));
        assert_eq!(a.emails.len(), 1);
        let entra = json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "externalId": "e1", "userName": "bob@contoso.com", "active": "False",
            "meta": {"resourceType": "User"}, "title": "Eng",
            "name": {"formatted": "Bob B", "familyName": "B", "givenName": "Bob"},
            ENTERPRISE_USER_SCHEMA: {"department": "R&D"}});
        let b = UserDraft::from_json(&entra).unwrap().finish().unwrap();
        assert!(!b.active);
        assert_eq!(b.karen_display_name().as_deref(), Some("Bob B"));
    }

    #[test]
    fn refuses_unknown_and_bad_values() {
        let unknown = json!({"schemas": [USER_SCHEMA], "userName": "a@b.co", "favourite": 1});
        let e = UserDraft::from_json(&unknown).unwrap_err();
        assert_eq!(e.code(), "scim_invalid_syntax");
        assert!(e.to_string().contains("favourite"));
        for bad in [
            json!({"userName": "a@b.co"}),
            json!({"schemas": [USER_SCHEMA], "userName": "not-an-email"}),
            json!({"schemas": [USER_SCHEMA], "userName": "a@b.co", "password": "x"}),
            json!({"schemas": [USER_SCHEMA], "userName": "a@b.co", "active": "maybe"}),
            json!({"schemas": ["urn:x"], "userName": "a@b.co"}),
        ] {
            assert_eq!(
                UserDraft::from_json(&bad).unwrap_err().code(),
                "scim_invalid_value",
                "{bad}"
            );
        }
        let no_name = UserDraft::from_json(&json!({"schemas": [USER_SCHEMA]})).unwrap();
        assert!(no_name.finish().is_err());
    }

    #[test]
    fn reads_groups() {
        let id = UserId::generate();
        let g = GroupDraft::from_json(&json!({"schemas": [GROUP_SCHEMA], "displayName": "Admin",
            "members": [{"value": id.to_string(), "display": "x"}, {"value": id.to_string()}]}))
        .unwrap();
        assert_eq!(g.members, vec![id]);
        let bad = GroupDraft::from_json(&json!({"schemas": [GROUP_SCHEMA], "displayName": "A",
            "members": [{"value": "nope"}]}));
        assert_eq!(bad.unwrap_err().code(), "scim_invalid_value");
    }
}
