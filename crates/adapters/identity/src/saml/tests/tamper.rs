//! Any one-byte change to a valid signed response is refused, unless it falls
//! in a region that is neither signed nor read (then the result is identical).

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::{ResponseParts, SignOptions, check, expectations, idp_config, sign, signed_response};
use crate::saml::{VerifiedAssertion, validate_response_xml};

static ASSERTION_SIGNED: LazyLock<String> =
    LazyLock::new(|| signed_response(&ResponseParts::default()));
static RESPONSE_SIGNED: LazyLock<String> = LazyLock::new(|| {
    let parts = ResponseParts::default();
    sign(&parts.response(), &parts.response_id, &SignOptions::idp())
});
static BASELINE: LazyLock<VerifiedAssertion> = LazyLock::new(|| check(&ASSERTION_SIGNED).unwrap());

fn flip(xml: &str, index: usize, mask: u8) -> Vec<u8> {
    let mut bytes = xml.as_bytes().to_vec();
    let position = index % bytes.len();
    bytes[position] ^= mask;
    bytes
}

fn refused_or_identical(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    // Bytes that are no longer UTF-8 are refused before parsing.
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(());
    };
    match validate_response_xml(&text, &idp_config(), &expectations()) {
        Err(_) => Ok(()),
        Ok(verified) => {
            prop_assert_eq!(&verified, &*BASELINE);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 384,
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn one_flipped_byte_in_an_assertion_signed_response(index in any::<usize>(), mask in 1_u8..=255) {
        refused_or_identical(flip(&ASSERTION_SIGNED, index, mask))?;
    }

    #[test]
    fn one_flipped_byte_in_a_response_signed_response(index in any::<usize>(), mask in 1_u8..=255) {
        refused_or_identical(flip(&RESPONSE_SIGNED, index, mask))?;
    }
}

#[test]
fn every_single_byte_of_the_signed_assertion_matters_or_is_harmless() {
    // Exhaustive over the assertion's bytes with one mask: a flip there is
    // refused unless it leaves the canonical form unchanged (whitespace
    // inside a tag, a quote swapped for an apostrophe...).
    let xml = &*ASSERTION_SIGNED;
    let start = xml.find("<saml:Assertion").unwrap();
    let end = xml.rfind("</saml:Assertion>").unwrap();
    for index in start..end {
        for mask in [0x01_u8, 0x20] {
            refused_or_identical(flip(xml, index, mask)).unwrap();
        }
    }
}
