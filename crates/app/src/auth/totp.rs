//! TOTP (RFC 6238) exactly as authenticator apps speak it: HMAC-SHA-1, six
//! digits, 30-second steps, one step of skew either way. The time is the
//! injected clock's, never the system's; secrets come from aws-lc-rs's
//! generator. Also the recovery codes, which are random text, not TOTP.

use karen_domain::credentials::SecretHash;
use karen_domain::{Error, Result};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::credentials;

/// Seconds per time step.
const STEP_SECS: u64 = 30;
/// The name authenticator apps show above the code.
const ISSUER: &str = "Karen";
/// How many recovery codes a user gets.
pub(crate) const RECOVERY_CODE_COUNT: usize = 10;

/// A new random secret (160 bits, as RFC 4226 recommends), base32 without padding.
pub(crate) fn new_secret() -> Result<SecretString> {
    let bytes = zeroize::Zeroizing::new(credentials::random_bytes::<20>()?);
    Ok(SecretString::from(Secret::new_stack(*bytes).to_base32()))
}

fn authenticator(secret: &SecretString, account: &str) -> Result<Totp> {
    let bytes = Secret::try_from_base32(secret.expose_secret())
        .map_err(|_| Error::internal("stored TOTP secret is not base32"))?;
    // A colon separates issuer and account in the URI label.
    let account = account.replace(':', "_");
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_secret(bytes)
        .with_issuer(Some(ISSUER))
        .with_account_name(account)
        .build()
        .map_err(|e| Error::internal(format!("TOTP parameters: {e}")))
}

/// The `otpauth://totp/…` URI an authenticator app imports (usually as a QR code).
pub(crate) fn uri(secret: &SecretString, account: &str) -> Result<String> {
    authenticator(secret, account)?
        .to_url()
        .map_err(|e| Error::internal(format!("TOTP URI: {e}")))
}

/// The time step whose code `code` is at `now` (± one step), if any. Spaces
/// in the code are ignored (apps show "123 456").
pub(crate) fn verify(
    secret: &SecretString,
    code: &str,
    now: OffsetDateTime,
) -> Result<Option<i64>> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let step = authenticator(secret, "")?.check(&code, seconds);
    Ok(step.and_then(|s| i64::try_from(s).ok()))
}

/// A new recovery code: 120 random bits as 24 base32 letters in groups of four
/// (`abcd-efgh-ijkl-mnop-qrst-uvwx`), shown once and stored as a SHA-256
/// digest: at 112 bits or more a fast digest resists guessing (ASVS 6.5.2), as
/// for API keys.
pub(crate) fn new_recovery_code() -> Result<(SecretString, SecretHash)> {
    let bytes = credentials::random_bytes::<15>()?;
    let letters = Secret::from(bytes.to_vec()).to_base32().to_lowercase();
    let hash = recovery_code_hash(&letters);
    let grouped: Vec<String> = letters
        .as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    Ok((SecretString::from(grouped.join("-")), hash))
}

/// The digest of a presented recovery code, ignoring case, dashes and spaces.
pub(crate) fn recovery_code_hash(presented: &str) -> SecretHash {
    let normalised: String = presented
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    credentials::hash(&normalised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA-1 seed "12345678901234567890", last six digits.
        let secret = SecretString::from(Secret::from(b"12345678901234567890".to_vec()).to_base32());
        for (seconds, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (2_000_000_000, "279037"),
        ] {
            let at = OffsetDateTime::from_unix_timestamp(seconds).unwrap();
            let step = verify(&secret, code, at).unwrap();
            assert_eq!(step, Some(seconds / 30));
        }
        let at = OffsetDateTime::from_unix_timestamp(59).unwrap();
        assert_eq!(verify(&secret, "287 082", at).unwrap(), Some(1));
        assert_eq!(verify(&secret, "287083", at).unwrap(), None);
        assert_eq!(verify(&secret, "+87082", at).unwrap(), None);
        // One step of skew either way, not two.
        let later = OffsetDateTime::from_unix_timestamp(59 + 30).unwrap();
        assert_eq!(verify(&secret, "287082", later).unwrap(), Some(1));
        let much_later = OffsetDateTime::from_unix_timestamp(59 + 60).unwrap();
        assert_eq!(verify(&secret, "287082", much_later).unwrap(), None);
    }

    #[test]
    fn uri_and_recovery_codes() {
        let secret = new_secret().unwrap();
        assert_eq!(secret.expose_secret().len(), 32);
        let link = uri(&secret, "acme/ada@example.com").unwrap();
        assert!(link.starts_with("otpauth://totp/Karen:acme"));
        assert!(link.contains(&format!("secret={}", secret.expose_secret())));
        assert!(link.contains("issuer=Karen"));
        let (code, hash) = new_recovery_code().unwrap();
        assert_eq!(code.expose_secret().len(), 29);
        assert_eq!(recovery_code_hash(code.expose_secret()), hash);
        assert_eq!(
            recovery_code_hash(&code.expose_secret().to_uppercase().replace('-', " ")),
            hash
        );
    }
}
