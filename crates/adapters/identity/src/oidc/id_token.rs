//! ID token verification (OpenID Connect Core §3.1.3.7): an asymmetric
//! algorithm only (never `none` or HMAC, whatever the header says), a
//! signature by a key of the provider's key set, `iss` the discovered issuer,
//! `aud` containing this client (and `azp` this client when there are several
//! audiences), `exp` in the future and `iat` not, by the service's clock, and
//! the `nonce` of this login.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use karen_domain::ports::{CodeRedemption, OidcError};
use karen_domain::sso::{ExternalIdentity, SsoFailure};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::{Discovery, OidcHttpClient, rejected};

/// Clock skew tolerated on `exp` and `iat`, in seconds.
const SKEW_SECS: i64 = 60;

/// The algorithms an ID token may be signed with.
const ALLOWED: [(&str, Algorithm); 8] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
];

/// One signing key of a provider.
pub(crate) struct Key {
    kid: Option<String>,
    /// `RSA` or `EC`.
    kty: String,
    alg: Option<String>,
    jwk: Jwk,
}

/// A provider's signing keys (keys Karen cannot use are skipped).
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

fn text(value: &Value, field: &str) -> Option<String> {
    value.get(field).and_then(Value::as_str).map(str::to_owned)
}

impl KeySet {
    /// Reads a JWKS document; keys of other types or uses are left out.
    pub(crate) fn parse(document: &Value) -> Result<Self, OidcError> {
        let entries = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| OidcError::Provider("the key set has no 'keys' list".into()))?;
        let keys = entries
            .iter()
            .filter(|entry| text(entry, "use").is_none_or(|u| u == "sig"))
            .filter_map(|entry| {
                let kty = text(entry, "kty")?;
                if kty != "RSA" && kty != "EC" {
                    return None;
                }
                let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
                Some(Key {
                    kid: text(entry, "kid"),
                    kty,
                    alg: text(entry, "alg"),
                    jwk,
                })
            })
            .collect();
        Ok(Self { keys })
    }

    /// The key that may verify a token of `alg` (named `kid`, if given).
    fn find(&self, alg: &str, kid: Option<&str>) -> Option<&Key> {
        let kty = if alg.starts_with("ES") { "EC" } else { "RSA" };
        let mut candidates = self.keys.iter().filter(|key| {
            key.kty == kty
                && key.alg.as_deref().is_none_or(|a| a == alg)
                && kid.is_none_or(|kid| key.kid.as_deref() == Some(kid))
        });
        let first = candidates.next()?;
        // Without a `kid`, the choice must be unambiguous.
        if kid.is_none() && candidates.next().is_some() {
            return None;
        }
        Some(first)
    }
}

/// The header's `alg` and `kid`, read before anything else so that `none`
/// and HMAC are refused by name.
fn header(token: &str) -> Result<(&'static str, Algorithm, Option<String>), OidcError> {
    let encoded = token.split('.').next().unwrap_or_default();
    let raw = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| rejected(SsoFailure::Claims))?;
    let header: Value = serde_json::from_slice(&raw).map_err(|_| rejected(SsoFailure::Claims))?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("none");
    let (name, algorithm) = ALLOWED
        .iter()
        .find(|(name, _)| *name == alg)
        .copied()
        .ok_or(rejected(SsoFailure::Algorithm))?;
    Ok((name, algorithm, text(&header, "kid")))
}

fn map_jwt_error(kind: &ErrorKind) -> SsoFailure {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => SsoFailure::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => SsoFailure::Algorithm,
        ErrorKind::InvalidIssuer => SsoFailure::Issuer,
        ErrorKind::InvalidAudience => SsoFailure::Audience,
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => SsoFailure::Expired,
        _ => SsoFailure::Claims,
    }
}

fn seconds(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    claims.get(name).and_then(Value::as_f64).map(|v| v as i64)
}

/// Checks the ID token and returns who the provider vouches for.
pub(crate) async fn verify(
    client: &OidcHttpClient,
    discovery: &Discovery,
    redemption: &CodeRedemption<'_>,
    token: &SecretString,
) -> Result<ExternalIdentity, OidcError> {
    let token = token.expose_secret();
    let (alg_name, algorithm, kid) = header(token)?;
    let mut keys = client.keys(redemption.issuer, discovery, false).await?;
    if keys.find(alg_name, kid.as_deref()).is_none() {
        // Perhaps the provider rotated its keys: read them again (rate-limited).
        keys = client.keys(redemption.issuer, discovery, true).await?;
    }
    let key = keys
        .find(alg_name, kid.as_deref())
        .ok_or(rejected(SsoFailure::Signature))?;
    let decoding = DecodingKey::from_jwk(&key.jwk).map_err(|_| rejected(SsoFailure::Signature))?;
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[discovery.issuer.as_str()]);
    validation.set_audience(&[redemption.client_id]);
    validation.set_required_spec_claims(&["iss", "aud", "sub", "exp"]);
    // Time is checked below against the service's clock, not the system's.
    validation.validate_exp = false;
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation)
        .map_err(|error| rejected(map_jwt_error(error.kind())))?;
    let claims = data.claims;

    let now = redemption.now.unix_timestamp();
    let exp = seconds(&claims, "exp").ok_or(rejected(SsoFailure::Claims))?;
    if exp + SKEW_SECS <= now {
        return Err(rejected(SsoFailure::Expired));
    }
    if seconds(&claims, "iat").is_some_and(|iat| iat > now + SKEW_SECS) {
        return Err(rejected(SsoFailure::Expired));
    }
    let audiences = match claims.get("aud") {
        Some(Value::Array(items)) => items.len(),
        _ => 1,
    };
    let azp = claims.get("azp").and_then(Value::as_str);
    if azp.is_some_and(|azp| azp != redemption.client_id) || (audiences > 1 && azp.is_none()) {
        return Err(rejected(SsoFailure::Audience));
    }
    let nonce = claims
        .get("nonce")
        .and_then(Value::as_str)
        .ok_or(rejected(SsoFailure::Nonce))?;
    if !(redemption.nonce_matches)(nonce) {
        return Err(rejected(SsoFailure::Nonce));
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or(rejected(SsoFailure::Claims))?
        .to_owned();
    let email_verified = match claims.get("email_verified") {
        Some(Value::Bool(verified)) => *verified,
        Some(Value::String(text)) => text == "true",
        _ => true,
    };
    Ok(ExternalIdentity {
        connection_id: redemption.connection_id,
        subject,
        email: claims
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_owned),
        email_verified,
        name: claims
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned),
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn none_and_hmac_are_refused_by_name() {
        for alg in ["none", "HS256", "HS512", "EdDSA"] {
            let token = format!("{}.e30.", encode(&serde_json::json!({"alg": alg})));
            assert!(matches!(
                header(&token),
                Err(OidcError::Rejected(SsoFailure::Algorithm))
            ));
        }
        let token = format!(
            "{}.e30.x",
            encode(&serde_json::json!({"alg": "ES256", "kid": "k"}))
        );
        let (name, _, kid) = header(&token).unwrap();
        assert_eq!((name, kid.as_deref()), ("ES256", Some("k")));
    }

    #[test]
    fn keys_are_chosen_by_type_alg_and_kid() {
        let set = KeySet::parse(&serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "alg": "RS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}
        ]}))
        .unwrap();
        assert!(set.find("RS256", Some("r1")).is_some());
        assert!(set.find("ES256", Some("r1")).is_none());
        assert!(set.find("ES256", None).is_some());
        assert!(set.find("RS256", Some("h1")).is_none());
        assert!(set.find("RS256", Some("enc")).is_none());
        assert!(set.find("RS384", Some("r1")).is_none());
    }
}
