//! SCIM PATCH (RFC 7644 §3.5.2) as Okta and Entra send it: `op` in any case
//! (`Replace`, `replace`), with a `path` (`active`, `name.givenName`,
//! `emails[type eq "work"].value`, `members`, `members[value eq "…"]`) or
//! without one (an object of attributes). Operations apply in order to a draft
//! of the resource; the service then stores the result like a PUT.

use serde_json::Value;

use super::resource::{
    GroupDraft, UserAttribute, UserDraft, email, email_value, group_name, member_id, members,
    object, optional_text, user_attribute,
};
use super::{
    ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, MAX_OPERATIONS, MAX_TEXT, PATCH_OP_SCHEMA, ScimEmail,
    ScimErrorType, USER_SCHEMA, fail,
};
use crate::Error;
use crate::values::printable;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Add,
    Replace,
    Remove,
}

/// One operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub kind: PatchKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

fn syntax(message: impl Into<String>) -> Error {
    fail(ScimErrorType::InvalidSyntax, message)
}

fn invalid(message: impl Into<String>) -> Error {
    fail(ScimErrorType::InvalidValue, message)
}

fn bad_path(path: &str, why: &str) -> Error {
    fail(
        ScimErrorType::InvalidPath,
        format!("path '{}': {why}", printable(path, 100)),
    )
}

/// Reads a PatchOp body.
pub fn parse(body: &Value) -> Result<Vec<PatchOperation>, Error> {
    let map = object(body, "a PatchOp")?;
    let mut operations = None;
    let mut has_schema = false;
    for (key, value) in map {
        match key.to_ascii_lowercase().as_str() {
            "schemas" => {
                let list = value
                    .as_array()
                    .filter(|l| l.len() <= 8)
                    .ok_or_else(|| invalid("schemas must be a list of at most 8 schema URNs"))?;
                has_schema = list.iter().any(|s| {
                    s.as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP_SCHEMA))
                });
            }
            "operations" => operations = Some(value),
            _ => {
                return Err(syntax(format!(
                    "unknown attribute '{}' of a PatchOp (schemas, Operations)",
                    printable(key, 80)
                )));
            }
        }
    }
    if !has_schema {
        return Err(invalid(format!("schemas must contain {PATCH_OP_SCHEMA}")));
    }
    let list = operations
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("Operations must be a list"))?;
    if list.is_empty() || list.len() > MAX_OPERATIONS {
        return Err(invalid(format!(
            "Operations must hold 1 to {MAX_OPERATIONS} operations"
        )));
    }
    list.iter().map(operation).collect()
}

fn operation(value: &Value) -> Result<PatchOperation, Error> {
    let map = object(value, "each operation")?;
    let mut kind = None;
    let mut path = None;
    let mut operand = None;
    for (key, item) in map {
        match key.to_ascii_lowercase().as_str() {
            "op" => {
                let name = item.as_str().unwrap_or_default();
                kind = Some(match name.to_ascii_lowercase().as_str() {
                    "add" => PatchKind::Add,
                    "replace" => PatchKind::Replace,
                    "remove" => PatchKind::Remove,
                    _ => {
                        return Err(syntax(format!(
                            "op '{}' is not add, replace or remove",
                            printable(name, 20)
                        )));
                    }
                });
            }
            "path" => {
                path = optional_text("path", item, 512)?;
            }
            "value" => operand = Some(item.clone()),
            _ => {
                return Err(syntax(format!(
                    "unknown attribute '{}' of an operation (op, path, value)",
                    printable(key, 80)
                )));
            }
        }
    }
    let kind = kind.ok_or_else(|| syntax("each operation needs an op"))?;
    match (kind, &path, &operand) {
        (PatchKind::Remove, None, _) => Err(fail(
            ScimErrorType::NoTarget,
            "a remove operation needs a path",
        )),
        (PatchKind::Add | PatchKind::Replace, _, None) => {
            Err(invalid("add and replace operations need a value"))
        }
        _ => Ok(PatchOperation {
            kind,
            path,
            value: operand,
        }),
    }
}

/// A parsed path: `attribute`, optionally `[sub eq value]`, optionally `.sub`.
struct Path {
    attribute: String,
    filter: Option<(String, Value)>,
    sub: Option<String>,
}

fn parse_path(text: &str, schemas: &[&str]) -> Result<Path, Error> {
    let mut rest = text.trim();
    for schema in schemas {
        if rest.len() > schema.len() + 1
            && rest.is_char_boundary(schema.len())
            && rest[..schema.len()].eq_ignore_ascii_case(schema)
            && rest[schema.len()..].starts_with(':')
        {
            rest = &rest[schema.len() + 1..];
            break;
        }
    }
    let (head, filter, tail) = match rest.find('[') {
        Some(open) => {
            let close = rest
                .rfind(']')
                .filter(|c| *c > open)
                .ok_or_else(|| bad_path(text, "an unclosed '['"))?;
            (
                &rest[..open],
                Some(&rest[open + 1..close]),
                &rest[close + 1..],
            )
        }
        None => (rest, None, ""),
    };
    let (attribute, mut sub) = match head.split_once('.') {
        Some((a, s)) => (a, Some(s.to_owned())),
        None => (head, None),
    };
    if let Some(after) = tail.strip_prefix('.') {
        if sub.is_some() || after.is_empty() {
            return Err(bad_path(text, "not a supported path"));
        }
        sub = Some(after.to_owned());
    } else if !tail.is_empty() {
        return Err(bad_path(text, "not a supported path"));
    }
    let filter = filter.map(|f| value_filter(text, f)).transpose()?;
    Ok(Path {
        attribute: attribute.to_owned(),
        filter,
        sub,
    })
}

/// `sub eq <JSON value>` inside brackets.
fn value_filter(path: &str, text: &str) -> Result<(String, Value), Error> {
    let unsupported = || bad_path(path, "only [<attribute> eq <value>] filters are supported");
    let (attribute, rest) = text
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(unsupported)?;
    let (operator, value) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .ok_or_else(unsupported)?;
    if !operator.eq_ignore_ascii_case("eq") {
        return Err(unsupported());
    }
    let value: Value = serde_json::from_str(value.trim()).map_err(|_| unsupported())?;
    Ok((attribute.to_owned(), value))
}

fn matches(email: &ScimEmail, (attribute, value): &(String, Value)) -> Result<bool, Error> {
    Ok(match attribute.to_ascii_lowercase().as_str() {
        "type" => {
            let wanted = value.as_str().unwrap_or_default();
            email
                .kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(wanted))
        }
        "value" => value
            .as_str()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(&email.value)),
        "primary" => value.as_bool() == Some(email.primary),
        _ => return Err(invalid("emails can be filtered on type, value or primary")),
    })
}

/// Applies operations to a user draft.
pub fn apply_to_user(draft: &mut UserDraft, operations: &[PatchOperation]) -> Result<(), Error> {
    for operation in operations {
        match (&operation.path, &operation.value) {
            (Some(path), value) => user_path(draft, operation.kind, path, value.as_ref())?,
            (None, Some(value)) => {
                for (key, item) in object(value, "the value of an operation without a path")? {
                    user_path(draft, operation.kind, key, Some(item))?;
                }
            }
            (None, None) => return Err(invalid("an operation needs a path or a value")),
        }
    }
    Ok(())
}

fn user_path(
    draft: &mut UserDraft,
    kind: PatchKind,
    text: &str,
    value: Option<&Value>,
) -> Result<(), Error> {
    let path = parse_path(text, &[USER_SCHEMA, ENTERPRISE_USER_SCHEMA])?;
    let attribute = user_attribute(&path.attribute)
        .or_else(|| {
            // `urn:…:enterprise:2.0:User:department` was stripped to `department`.
            text.to_ascii_lowercase()
                .starts_with(&ENTERPRISE_USER_SCHEMA.to_ascii_lowercase())
                .then_some(UserAttribute::Ignored)
        })
        .ok_or_else(|| bad_path(text, "no such attribute of a User"))?;
    let null = Value::Null;
    let value = if kind == PatchKind::Remove {
        &null
    } else {
        value.unwrap_or(&null)
    };
    let simple = path.filter.is_none() && path.sub.is_none();
    match attribute {
        UserAttribute::Ignored => Ok(()),
        // A client may repeat the id in a replace without a path.
        UserAttribute::Id
            if simple && value.as_str().is_some() && value.as_str() == draft.id.as_deref() =>
        {
            Ok(())
        }
        UserAttribute::Id
        | UserAttribute::Meta
        | UserAttribute::Schemas
        | UserAttribute::Groups => Err(fail(
            ScimErrorType::Mutability,
            format!("{} is read-only", path.attribute),
        )),
        UserAttribute::UserName if kind == PatchKind::Remove => {
            Err(invalid("userName is required and cannot be removed"))
        }
        UserAttribute::Active if kind == PatchKind::Remove => {
            Err(invalid("active cannot be removed; replace it with false"))
        }
        UserAttribute::Name if path.filter.is_none() => match &path.sub {
            Some(part) => draft.set_name_part(part, value),
            None if kind == PatchKind::Remove => draft.set("name", &Value::Null),
            None => draft.set("name", value),
        },
        UserAttribute::Emails => user_emails(draft, kind, text, &path, value),
        _ if simple => draft.set(&path.attribute, value),
        _ => Err(bad_path(
            text,
            "this attribute has no sub-attributes or filters",
        )),
    }
}

fn user_emails(
    draft: &mut UserDraft,
    kind: PatchKind,
    text: &str,
    path: &Path,
    value: &Value,
) -> Result<(), Error> {
    let Some(filter) = &path.filter else {
        if path.sub.is_some() {
            return Err(bad_path(
                text,
                "name the email with a filter, e.g. emails[type eq \"work\"].value",
            ));
        }
        return match kind {
            PatchKind::Replace | PatchKind::Remove => draft.set("emails", value),
            PatchKind::Add => {
                let mut list = draft.emails.clone();
                for email in super::resource::emails(value)? {
                    list.retain(|e| e.value != email.value);
                    list.push(email);
                }
                let all: Vec<Value> = list
                    .iter()
                    .filter_map(|e| serde_json::to_value(e).ok())
                    .collect();
                draft.set("emails", &Value::Array(all))
            }
        };
    };
    let mut hits = Vec::new();
    for (i, email) in draft.emails.iter().enumerate() {
        if matches(email, filter)? {
            hits.push(i);
        }
    }
    let no_target = || {
        fail(
            ScimErrorType::NoTarget,
            format!("no email matches '{}'", printable(text, 100)),
        )
    };
    match (kind, path.sub.as_deref().map(str::to_ascii_lowercase)) {
        (PatchKind::Remove, None) => {
            if hits.is_empty() {
                return Err(no_target());
            }
            let mut i = 0;
            draft.emails.retain(|_| {
                i += 1;
                !hits.contains(&(i - 1))
            });
        }
        (PatchKind::Remove, Some(sub)) if sub == "value" => {
            if hits.is_empty() {
                return Err(no_target());
            }
            let mut i = 0;
            draft.emails.retain(|_| {
                i += 1;
                !hits.contains(&(i - 1))
            });
        }
        (PatchKind::Remove, Some(_)) => {
            return Err(bad_path(
                text,
                "only whole emails or their value can be removed",
            ));
        }
        (_, None) => {
            let replacement = email(value)?;
            if hits.is_empty() {
                draft.emails.push(replacement);
            } else {
                for i in hits {
                    if let Some(slot) = draft.emails.get_mut(i) {
                        *slot = replacement.clone();
                    }
                }
            }
        }
        (_, Some(sub)) => {
            if hits.is_empty() {
                // Entra sets `emails[type eq "work"].value` before any work email exists.
                let is_type = filter.0.eq_ignore_ascii_case("type");
                let kind_name = filter.1.as_str().map(str::to_owned);
                if !is_type || kind_name.is_none() {
                    return Err(no_target());
                }
                draft.emails.push(ScimEmail {
                    value: String::new(),
                    kind: kind_name,
                    primary: false,
                });
                hits.push(draft.emails.len() - 1);
            }
            for i in hits {
                let Some(slot) = draft.emails.get_mut(i) else {
                    continue;
                };
                match sub.as_str() {
                    "value" => slot.value = email_value(value)?,
                    "type" => slot.kind = optional_text("emails.type", value, MAX_TEXT)?,
                    "primary" => slot.primary = super::resource::boolean("emails.primary", value)?,
                    "display" => {}
                    _ => {
                        return Err(bad_path(
                            text,
                            "emails have value, type, primary and display",
                        ));
                    }
                }
            }
            if draft.emails.iter().any(|e| e.value.is_empty()) {
                return Err(invalid("each email needs a value"));
            }
        }
    }
    if draft.emails.len() > super::MAX_EMAILS {
        return Err(invalid(format!(
            "a user has at most {} emails",
            super::MAX_EMAILS
        )));
    }
    Ok(())
}

/// Applies operations to a group draft (whose `id` is the group's).
pub fn apply_to_group(draft: &mut GroupDraft, operations: &[PatchOperation]) -> Result<(), Error> {
    for operation in operations {
        match (&operation.path, &operation.value) {
            (Some(path), value) => group_path(draft, operation.kind, path, value.as_ref())?,
            (None, Some(value)) => {
                for (key, item) in object(value, "the value of an operation without a path")? {
                    group_path(draft, operation.kind, key, Some(item))?;
                }
            }
            (None, None) => return Err(invalid("an operation needs a path or a value")),
        }
    }
    if draft.members.len() > super::MAX_MEMBERS * 100 {
        return Err(invalid("the group has too many members"));
    }
    Ok(())
}

fn group_path(
    draft: &mut GroupDraft,
    kind: PatchKind,
    text: &str,
    value: Option<&Value>,
) -> Result<(), Error> {
    let path = parse_path(text, &[GROUP_SCHEMA])?;
    let null = Value::Null;
    let value = value.unwrap_or(&null);
    let simple = path.filter.is_none() && path.sub.is_none();
    match path.attribute.to_ascii_lowercase().as_str() {
        "displayname" if simple => {
            if kind == PatchKind::Remove {
                return Err(invalid("displayName is required and cannot be removed"));
            }
            draft.display_name = Some(group_name(value)?);
        }
        "externalid" if simple => {
            draft.external_id = if kind == PatchKind::Remove {
                None
            } else {
                optional_text("externalId", value, MAX_TEXT)?
            };
        }
        // Okta repeats the id in a replace without a path.
        "id" if simple && value.as_str().is_some() && value.as_str() == draft.id.as_deref() => {}
        "id" | "meta" | "schemas" => {
            return Err(fail(
                ScimErrorType::Mutability,
                format!("{} is read-only", path.attribute),
            ));
        }
        "members" if path.sub.is_none() => match (&path.filter, kind) {
            (None, PatchKind::Add) => {
                for id in members(value)? {
                    if !draft.members.contains(&id) {
                        draft.members.push(id);
                    }
                }
            }
            (None, PatchKind::Replace) => draft.members = members(value)?,
            (None, PatchKind::Remove) => match value {
                // Entra: remove with the members to remove as the value.
                Value::Null => draft.members.clear(),
                listed => {
                    let gone = members(listed)?;
                    draft.members.retain(|m| !gone.contains(m));
                }
            },
            (Some((attribute, id)), PatchKind::Remove)
                if attribute.eq_ignore_ascii_case("value") =>
            {
                let id = member_id(id)?;
                if !draft.members.contains(&id) {
                    return Err(fail(
                        ScimErrorType::NoTarget,
                        format!("{id} is not a member of this group"),
                    ));
                }
                draft.members.retain(|m| *m != id);
            }
            _ => {
                return Err(bad_path(
                    text,
                    "members can be filtered only to remove one: members[value eq \"<id>\"]",
                ));
            }
        },
        _ => return Err(bad_path(text, "no such attribute of a Group")),
    }
    Ok(())
}

#[cfg(test)]
#[path = "patch_tests.rs"]
mod tests;
