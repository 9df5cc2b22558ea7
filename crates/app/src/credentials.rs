//! Opaque credentials: API keys (`krn_…`), refresh tokens (`krr_…`),
//! operator keys (`krn_op_…`), password tokens (`kps_…`) and login steps. Each carries the ids needed to find it (tenant
//! and record id, so a lookup runs inside the right tenant's scope) and 256
//! random bits; only a SHA-256 digest of the whole credential is stored.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use karen_domain::credentials::SecretHash;
use karen_domain::error::AuthFailure;
use karen_domain::{Error, Result, TenantId};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

const VERSION: u8 = 1;
const SECRET_LEN: usize = 32;

/// The kinds of opaque credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A tenant API key: tenant id + key id + secret.
    ApiKey,
    /// A refresh token: tenant id + token id + secret.
    Refresh,
    /// A platform operator key: key id + secret.
    Operator,
    /// The pending second step of a login: tenant id + challenge id + secret.
    /// Good for nothing but `POST /v1/auth/login/mfa[/enroll]`.
    MfaChallenge,
    /// The `state` of a single sign-on login: tenant id + login id + secret.
    /// Good for nothing but the SSO callback.
    SsoState,
    /// The `RelayState` of a SAML login: tenant id + login id + a 128-bit
    /// secret (SAML allows at most 80 bytes). Good for nothing but the ACS.
    SamlRelay,
    /// A password setup or reset token: tenant id + token id + secret. Good
    /// for nothing but `POST /v1/auth/password`.
    PasswordToken,
}

impl Kind {
    const fn prefix(self) -> &'static str {
        match self {
            Kind::ApiKey => "krn_",
            Kind::Refresh => "krr_",
            Kind::Operator => "krn_op_",
            Kind::MfaChallenge => "krm_",
            Kind::SsoState => "krs_",
            Kind::SamlRelay => "krq_",
            Kind::PasswordToken => "kps_",
        }
    }

    const fn id_count(self) -> usize {
        match self {
            Kind::ApiKey
            | Kind::Refresh
            | Kind::MfaChallenge
            | Kind::SsoState
            | Kind::SamlRelay
            | Kind::PasswordToken => 2,
            Kind::Operator => 1,
        }
    }

    const fn secret_len(self) -> usize {
        match self {
            Kind::SamlRelay => SECRET_LEN / 2,
            _ => SECRET_LEN,
        }
    }
}

/// A freshly generated credential: the text to hand out once, and what to store.
pub struct Minted {
    pub text: SecretString,
    pub hash: SecretHash,
    /// A prefix of the text that is safe to display to recognise the credential.
    pub display_prefix: String,
}

/// A credential parsed from a request.
pub struct Presented {
    pub ids: Vec<Uuid>,
    pub hash: SecretHash,
}

impl Presented {
    /// The tenant and the record id of a tenant credential (tenant first).
    pub fn tenant_and_id(&self) -> Result<(TenantId, Uuid)> {
        match self.ids[..] {
            [tenant, id] => Ok((TenantId::from_uuid(tenant), id)),
            _ => Err(Error::Unauthenticated(AuthFailure::Invalid)),
        }
    }

    /// Whether the presented credential is the stored one (constant time).
    pub fn matches(&self, stored: &SecretHash) -> bool {
        verify_slices_are_equal(&self.hash.0, &stored.0).is_ok()
    }
}

/// The SHA-256 digest under which a high-entropy secret is stored.
pub fn hash(text: &str) -> SecretHash {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
    SecretHash(out)
}

/// Fills a buffer from the system's secure random generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| Error::internal("system random generator failed"))?;
    Ok(bytes)
}

/// Creates a credential of `kind` for `ids` (tenant first, then record id).
pub fn mint(kind: Kind, ids: &[Uuid]) -> Result<Minted> {
    if ids.len() != kind.id_count() {
        return Err(Error::internal("wrong number of ids for credential"));
    }
    let secret = zeroize::Zeroizing::new(random_bytes::<SECRET_LEN>()?);
    let secret_len = kind.secret_len();
    let mut raw = zeroize::Zeroizing::new(Vec::with_capacity(1 + 16 * ids.len() + secret_len));
    raw.push(VERSION);
    for id in ids {
        raw.extend_from_slice(id.as_bytes());
    }
    raw.extend_from_slice(&secret[..secret_len]);
    let text = format!(
        "{}{}",
        kind.prefix(),
        URL_SAFE_NO_PAD.encode(raw.as_slice())
    );
    let display_prefix: String = text.chars().take(kind.prefix().len() + 10).collect();
    Ok(Minted {
        hash: hash(&text),
        display_prefix,
        text: SecretString::from(text),
    })
}

/// Parses a presented credential of `kind`; anything malformed is `invalid_token`.
pub fn parse(kind: Kind, text: &str) -> Result<Presented> {
    let invalid = || Error::Unauthenticated(AuthFailure::Invalid);
    let body = text.strip_prefix(kind.prefix()).ok_or_else(invalid)?;
    if kind == Kind::ApiKey && body.starts_with("op_") {
        return Err(invalid());
    }
    let raw = zeroize::Zeroizing::new(URL_SAFE_NO_PAD.decode(body).map_err(|_| invalid())?);
    if raw.len() != 1 + 16 * kind.id_count() + kind.secret_len() || raw.first() != Some(&VERSION) {
        return Err(invalid());
    }
    let ids = (0..kind.id_count())
        .map(|i| Uuid::from_slice(&raw[1 + 16 * i..1 + 16 * (i + 1)]).map_err(|_| invalid()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Presented {
        ids,
        hash: hash(text),
    })
}

/// Which kind a bearer credential is, by its prefix.
pub fn kind_of(text: &str) -> Option<Kind> {
    if text.starts_with(Kind::Operator.prefix()) {
        Some(Kind::Operator)
    } else if text.starts_with(Kind::ApiKey.prefix()) {
        Some(Kind::ApiKey)
    } else if text.starts_with(Kind::Refresh.prefix()) {
        Some(Kind::Refresh)
    } else if text.starts_with(Kind::MfaChallenge.prefix()) {
        Some(Kind::MfaChallenge)
    } else if text.starts_with(Kind::SsoState.prefix()) {
        Some(Kind::SsoState)
    } else if text.starts_with(Kind::SamlRelay.prefix()) {
        Some(Kind::SamlRelay)
    } else if text.starts_with(Kind::PasswordToken.prefix()) {
        Some(Kind::PasswordToken)
    } else {
        None
    }
}

/// Exposes a minted credential's text (for the one response that shows it).
pub fn reveal(secret: &SecretString) -> String {
    secret.expose_secret().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let tenant = Uuid::now_v7();
        let key = Uuid::now_v7();
        let minted = mint(Kind::ApiKey, &[tenant, key]).unwrap();
        let text = reveal(&minted.text);
        assert!(text.starts_with("krn_"));
        assert_eq!(kind_of(&text), Some(Kind::ApiKey));
        let parsed = parse(Kind::ApiKey, &text).unwrap();
        assert_eq!(parsed.ids, vec![tenant, key]);
        assert!(parsed.matches(&minted.hash));
        // Flip one character of the secret part: still well-formed, no longer matching.
        let mut chars: Vec<char> = text.chars().collect();
        let last = chars.len() - 2;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert!(
            !parse(Kind::ApiKey, &tampered)
                .unwrap()
                .matches(&minted.hash)
        );
        assert!(parse(Kind::Refresh, &text).is_err());
        assert!(parse(Kind::ApiKey, "krn_short").is_err());
        assert!(parse(Kind::ApiKey, "krn_%%%").is_err());
    }

    #[test]
    fn operator_keys_are_not_api_keys() {
        let minted = mint(Kind::Operator, &[Uuid::now_v7()]).unwrap();
        let text = reveal(&minted.text);
        assert_eq!(kind_of(&text), Some(Kind::Operator));
        assert!(parse(Kind::ApiKey, &text).is_err());
        assert!(parse(Kind::Operator, &text).unwrap().matches(&minted.hash));
    }

    #[test]
    fn mfa_challenges_are_no_other_credential() {
        let minted = mint(Kind::MfaChallenge, &[Uuid::now_v7(), Uuid::now_v7()]).unwrap();
        let text = reveal(&minted.text);
        assert_eq!(kind_of(&text), Some(Kind::MfaChallenge));
        for other in [Kind::ApiKey, Kind::Refresh, Kind::Operator] {
            assert!(parse(other, &text).is_err());
        }
    }

    #[test]
    fn password_tokens_are_no_other_credential() {
        let ids = [Uuid::now_v7(), Uuid::now_v7()];
        let minted = mint(Kind::PasswordToken, &ids).unwrap();
        let text = reveal(&minted.text);
        assert!(text.starts_with("kps_"));
        assert_eq!(kind_of(&text), Some(Kind::PasswordToken));
        let parsed = parse(Kind::PasswordToken, &text).unwrap();
        assert_eq!(parsed.ids, ids.to_vec());
        assert!(parsed.matches(&minted.hash));
        for other in [Kind::ApiKey, Kind::Refresh, Kind::MfaChallenge] {
            assert!(parse(other, &text).is_err());
        }
    }
}
