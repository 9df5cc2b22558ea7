//! Value types whose constructor is the only way in ("parse, don't validate").
//! Each rejects bad input with an error that names the field and says what is
//! allowed, so a client can fix its request.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A shortened, control-character-free rendering of client input for error messages.
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
}

fn check_length(field: &str, text: &str, min: usize, max: usize) -> Result<(), Error> {
    let count = text.chars().count();
    if count < min {
        return Err(Error::invalid(
            Some(field),
            if min == 1 {
                format!("{field} must not be empty")
            } else {
                format!("{field} must be at least {min} characters")
            },
        ));
    }
    if count > max {
        return Err(Error::invalid(
            Some(field),
            format!("{field} must be at most {max} characters (got {count})"),
        ));
    }
    Ok(())
}

macro_rules! string_value {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// For constants known to be valid (built-in names); never for client input.
            #[allow(dead_code)]
            pub(crate) fn from_trusted(text: &str) -> Self {
                Self(text.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self, Error> {
                Self::parse(&value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_value!(
    /// A URL-safe tenant identifier: 3–63 characters of `a-z`, `0-9` and `-`,
    /// starting with a letter and not ending with `-`.
    Slug
);
string_value!(
    /// An email address, stored lower-cased so that uniqueness within a tenant
    /// ignores case.
    Email
);
string_value!(
    /// A person's display name: 1–200 characters, no control characters.
    DisplayName
);
string_value!(
    /// A tenant's display name: 1–200 characters, no control characters.
    TenantName
);
string_value!(
    /// A plan name: 2–64 characters of `a-z`, `0-9`, `_` and `-`, starting with a letter.
    PlanName
);
string_value!(
    /// A short label (API key name, role description): 1–200 characters, no control characters.
    Label
);
string_value!(
    /// A role name: 2–64 characters of `a-z`, `0-9`, `_` and `-`, starting with a letter.
    RoleName
);

fn identifier(
    field: &str,
    text: &str,
    min: usize,
    max: usize,
    extra: &[char],
) -> Result<(), Error> {
    check_length(field, text, min, max)?;
    let mut chars = text.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = text
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c));
    let allowed: String = extra.iter().map(|c| format!(" '{c}'")).collect();
    if !first_ok || !rest_ok || text.ends_with('-') {
        return Err(Error::invalid(
            Some(field),
            format!(
                "{field} '{}' must start with a lowercase letter and contain only a-z, 0-9 and{allowed}",
                printable(text, 70)
            ),
        ));
    }
    Ok(())
}

fn plain_text(field: &str, text: &str, max: usize) -> Result<String, Error> {
    let trimmed = text.trim();
    check_length(field, trimmed, 1, max)?;
    if trimmed.chars().any(char::is_control) {
        return Err(Error::invalid(
            Some(field),
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

impl Slug {
    /// Parses a tenant slug.
    pub fn parse(text: &str) -> Result<Self, Error> {
        identifier("slug", text, 3, 63, &['-'])?;
        Ok(Self(text.to_owned()))
    }
}

impl RoleName {
    /// Parses a role name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        identifier("role", text, 2, 64, &['_', '-'])?;
        Ok(Self(text.to_owned()))
    }
}

impl PlanName {
    /// Parses a plan name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        identifier("plan", text, 2, 64, &['_', '-'])?;
        Ok(Self(text.to_owned()))
    }
}

impl Label {
    /// Parses a label (surrounding whitespace is dropped).
    pub fn parse(text: &str) -> Result<Self, Error> {
        plain_text("name", text, 200).map(Self)
    }
}

impl DisplayName {
    /// Parses a display name (surrounding whitespace is dropped).
    pub fn parse(text: &str) -> Result<Self, Error> {
        plain_text("display_name", text, 200).map(Self)
    }
}

impl TenantName {
    /// Parses a tenant name (surrounding whitespace is dropped).
    pub fn parse(text: &str) -> Result<Self, Error> {
        plain_text("name", text, 200).map(Self)
    }
}

impl Email {
    /// Parses an address of the form `local@domain.tld` (at most 254 characters).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let trimmed = text.trim();
        check_length("email", trimmed, 3, 254)?;
        let lowered = trimmed.to_lowercase();
        let bad = || {
            Error::invalid(
                Some("email"),
                format!(
                    "'{}' is not an email address of the form name@example.com",
                    printable(trimmed, 80)
                ),
            )
        };
        let (local, domain) = lowered.rsplit_once('@').ok_or_else(bad)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '"');
        if !domain_ok || !local_ok {
            return Err(bad());
        }
        Ok(Self(lowered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(Slug::parse("acme").is_ok());
        assert!(Slug::parse("acme-corp-2").is_ok());
        for bad in [
            "ac",
            "Acme",
            "1acme",
            "acme-",
            "ac me",
            "acmé",
            &"a".repeat(64),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@exa mple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        let err = Email::parse(&long).unwrap_err();
        assert!(err.to_string().contains("at most 254"), "{err}");
    }

    #[test]
    fn names_reject_control_characters_and_overlong_text() {
        assert!(DisplayName::parse("Ada\u{0}").is_err());
        assert!(DisplayName::parse(&"x".repeat(201)).is_err());
        assert_eq!(TenantName::parse("  Acme  ").unwrap().as_str(), "Acme");
        assert!(TenantName::parse("   ").is_err());
    }

    #[test]
    fn printable_truncates_and_masks() {
        assert_eq!(printable("ab\ncd", 10), "ab?cd");
        assert_eq!(printable("abcdef", 3), "abc…");
    }
}
