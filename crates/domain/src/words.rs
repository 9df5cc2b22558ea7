//! Content words: what a text is about, for deciding whether retrieved
//! material shares anything with a question (English function words left out).

use std::collections::BTreeSet;

/// Words too common to say what a text is about.
pub const STOP_WORDS: &[&str] = &[
    "about", "after", "all", "also", "and", "any", "are", "been", "but", "can", "could", "did",
    "does", "for", "from", "had", "has", "have", "how", "into", "its", "know", "not", "our",
    "please", "should", "some", "tell", "than", "that", "the", "their", "them", "then", "there",
    "they", "this", "was", "were", "what", "when", "where", "which", "who", "why", "will", "with",
    "would", "you", "your",
];

/// The distinct, lowercased content words of `text`: runs of letters and
/// digits of three characters or more that are not stop words.
pub fn content_terms(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|word| !STOP_WORDS.contains(&word.as_str()))
        .collect()
}

/// Whether `text` contains any of `terms` (as produced by [`content_terms`]).
pub fn mentions_any(terms: &BTreeSet<String>, text: &str) -> bool {
    !terms.is_empty() && content_terms(text).iter().any(|word| terms.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_words_and_short_words_say_nothing() {
        let terms = content_terms("What is the Vacation policy for 2026? Is it ok?");
        assert_eq!(
            terms.into_iter().collect::<Vec<_>>(),
            ["2026", "policy", "vacation"]
        );
        let question = content_terms("what is the vacation policy");
        assert!(mentions_any(&question, "Vacation: 25 days a year."));
        assert!(!mentions_any(
            &question,
            "The coffee machine is on the second floor."
        ));
        assert!(!mentions_any(
            &content_terms("is it the"),
            "it is the thing"
        ));
    }
}
