//! SCIM filters (RFC 7644 §3.4.2.2), the subset identity providers send to
//! find a resource before creating it: `<attribute> eq "<value>"`, with the
//! attribute and operator matched case-insensitively and the value a JSON
//! string (its escapes undone). Everything else is `invalidFilter`.

use super::{ScimErrorType, fail};
use crate::Error;
use crate::values::printable;

/// The attributes a filter may compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterAttribute {
    UserName,
    ExternalId,
    DisplayName,
    Id,
}

impl FilterAttribute {
    /// The attribute's SCIM name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UserName => "userName",
            Self::ExternalId => "externalId",
            Self::DisplayName => "displayName",
            Self::Id => "id",
        }
    }
}

/// `attribute eq "value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EqFilter {
    pub attribute: FilterAttribute,
    pub value: String,
}

/// The longest filter accepted.
const MAX_FILTER: usize = 1024;

/// Parses a filter, allowing only the attributes in `allowed` (with or
/// without the schema URN `prefix`).
pub fn parse(text: &str, prefix: &str, allowed: &[FilterAttribute]) -> Result<EqFilter, Error> {
    let names: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
    let supported = || {
        format!(
            "only `<attribute> eq \"<value>\"` filters are supported, on {}",
            names.join(", ")
        )
    };
    let invalid = |what: String| fail(ScimErrorType::InvalidFilter, what);
    if text.len() > MAX_FILTER {
        return Err(invalid(format!(
            "the filter is longer than {MAX_FILTER} bytes"
        )));
    }
    let text = text.trim();
    let (attribute, rest) = text
        .split_once(char::is_whitespace)
        .ok_or_else(|| invalid(format!("'{}': {}", printable(text, 80), supported())))?;
    let rest = rest.trim_start();
    let (operator, value) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| invalid(format!("'{}': {}", printable(text, 80), supported())))?;
    if !operator.eq_ignore_ascii_case("eq") {
        return Err(invalid(format!(
            "the operator '{}' is not supported; {}",
            printable(operator, 20),
            supported()
        )));
    }
    let bare = strip_prefix_ignore_case(attribute, prefix)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or(attribute);
    let attribute = allowed
        .iter()
        .copied()
        .find(|a| a.as_str().eq_ignore_ascii_case(bare))
        .ok_or_else(|| {
            invalid(format!(
                "filtering on '{}' is not supported; {}",
                printable(attribute, 80),
                supported()
            ))
        })?;
    let value = json_string(value.trim()).ok_or_else(|| {
        invalid(format!(
            "the value must be one double-quoted JSON string with nothing after it; {}",
            supported()
        ))
    })?;
    Ok(EqFilter { attribute, value })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// One complete JSON string literal, unescaped.
fn json_string(text: &str) -> Option<String> {
    if !text.starts_with('"') {
        return None;
    }
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<String>();
    let value = stream.next()?.ok()?;
    text[stream.byte_offset()..]
        .trim()
        .is_empty()
        .then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::USER_SCHEMA;

    const USER: &[FilterAttribute] = &[FilterAttribute::UserName, FilterAttribute::ExternalId];

    fn user(text: &str) -> Result<EqFilter, Error> {
        parse(text, USER_SCHEMA, USER)
    }

    #[test]
    fn parses_eq_with_any_case_and_escapes() {
        let f = user(r#"userName eq "ada@example.com""#).unwrap();
        assert_eq!(f.attribute, FilterAttribute::UserName);
        assert_eq!(f.value, "ada@example.com");
        let f = user(r#"  USERNAME   EQ "a\"b\\c\u0041"  "#).unwrap();
        assert_eq!(f.value, "a\"b\\cA");
        let f = user(r#"externalid eq "00u1""#).unwrap();
        assert_eq!(f.attribute, FilterAttribute::ExternalId);
        let f = user(&format!("{USER_SCHEMA}:userName eq \"x\"")).unwrap();
        assert_eq!(f.attribute, FilterAttribute::UserName);
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "userName",
            r#"userName ne "x""#,
            r#"userName co "x""#,
            "userName pr",
            r#"displayName eq "x""#,
            r#"userName eq "x" and active eq true"#,
            r#"userName eq "x" or userName eq "y""#,
            r#"(userName eq "x")"#,
            r#"emails[type eq "work"] eq "x""#,
            "userName eq x",
            r#"userName eq "unterminated"#,
            "userName eq true",
        ] {
            let error = user(bad).unwrap_err();
            assert_eq!(error.code(), "scim_invalid_filter", "{bad}");
        }
        assert!(user(&format!("userName eq \"{}\"", "x".repeat(2000))).is_err());
    }
}
