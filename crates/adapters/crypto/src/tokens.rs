//! Access tokens: JWTs signed with Ed25519 (`EdDSA`), with a `kid` naming the
//! signing key. Keys live in the store (platform table) so every replica signs
//! and verifies with the same set; `rotate` makes a new key current and keeps
//! retired keys verifying until the tokens they signed have expired.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use karen_domain::clock::Clock;
use karen_domain::credentials::{PrivateKeyDer, SigningKeyRecord};
use karen_domain::error::AuthFailure;
use karen_domain::ports::{AccessClaims, AccessTokens, Store};
use karen_domain::{Error, Result, SessionId, SigningKeyId, TenantId, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

/// Token settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
    /// Lifetime of an access token.
    pub ttl: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: Uuid,
    tid: Uuid,
    sid: Uuid,
    iat: i64,
    exp: i64,
}

struct Ring {
    current: Option<(String, EncodingKey)>,
    verifying: HashMap<String, DecodingKey>,
}

/// The access-token service.
pub struct JwtTokens {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: JwtConfig,
    ring: RwLock<Ring>,
    /// When keys were last read from the store (an unknown `kid` triggers a
    /// reload at most every few seconds, so forged kids cannot flood the store).
    loaded_at: RwLock<Instant>,
}

const RELOAD_AFTER: Duration = Duration::from_secs(60);
const UNKNOWN_KID_RELOAD_MIN: Duration = Duration::from_secs(5);
/// Tolerance for clocks of different replicas.
const SKEW: Duration = Duration::from_secs(30);

fn invalid() -> Error {
    Error::Unauthenticated(AuthFailure::Invalid)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl JwtTokens {
    /// Loads the signing keys, creating the first one if there is none.
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: JwtConfig,
    ) -> Result<Self> {
        let tokens = Self {
            store,
            clock,
            config,
            ring: RwLock::new(Ring {
                current: None,
                verifying: HashMap::new(),
            }),
            loaded_at: RwLock::new(Instant::now()),
        };
        tokens.reload().await?;
        if read(&tokens.ring).current.is_none() {
            tokens.rotate().await?;
        }
        Ok(tokens)
    }

    async fn reload(&self) -> Result<()> {
        let retired_after = self.clock.now() - self.config.ttl - SKEW;
        let mut tx = self.store.platform().await?;
        let keys = tx.signing_keys(retired_after).await?;
        tx.commit().await?;
        let mut ring = Ring {
            current: None,
            verifying: HashMap::new(),
        };
        for key in keys {
            if key.algorithm != "EdDSA" {
                continue;
            }
            let kid = key.id.to_string();
            ring.verifying
                .insert(kid.clone(), DecodingKey::from_ed_der(&key.public_key));
            // Keys come newest first: the first unretired one signs.
            if ring.current.is_none() && key.retired_at.is_none() {
                ring.current = Some((kid, EncodingKey::from_ed_der(&key.private_key.0)));
            }
        }
        *write(&self.ring) = ring;
        *write(&self.loaded_at) = Instant::now();
        Ok(())
    }

    fn to_claims(&self, claims: Claims) -> Result<AccessClaims> {
        let at = |secs: i64| OffsetDateTime::from_unix_timestamp(secs).map_err(|_| invalid());
        Ok(AccessClaims {
            tenant_id: TenantId::from_uuid(claims.tid),
            user_id: UserId::from_uuid(claims.sub),
            session_id: SessionId::from_uuid(claims.sid),
            issued_at: at(claims.iat)?,
            expires_at: at(claims.exp)?,
        })
    }
}

/// What a token must carry: the `EdDSA` algorithm, the claims Karen sets, and
/// exactly this issuer and audience. Expiry is checked by the caller against
/// the injected clock, not the system time.
fn validation(config: &JwtConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims =
        HashSet::from(["exp", "iat", "iss", "aud", "sub"].map(str::to_owned));
    validation.set_issuer(&[config.issuer.as_str()]);
    validation.set_audience(&[config.audience.as_str()]);
    validation
}

#[async_trait]
impl AccessTokens for JwtTokens {
    async fn issue(&self, claims: &AccessClaims) -> Result<String> {
        if read(&self.loaded_at).elapsed() > RELOAD_AFTER {
            self.reload().await?;
        }
        let ring = read(&self.ring);
        let (kid, key) = ring
            .current
            .as_ref()
            .ok_or_else(|| Error::internal("no signing key"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let body = Claims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: claims.user_id.as_uuid(),
            tid: claims.tenant_id.as_uuid(),
            sid: claims.session_id.as_uuid(),
            iat: claims.issued_at.unix_timestamp(),
            exp: claims.expires_at.unix_timestamp(),
        };
        jsonwebtoken::encode(&header, &body, key)
            .map_err(|e| Error::internal(format!("signing token: {e}")))
    }

    async fn verify(&self, token: &str) -> Result<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid());
        }
        let kid = header.kid.ok_or_else(invalid)?;
        let known = read(&self.ring).verifying.contains_key(&kid);
        if !known && read(&self.loaded_at).elapsed() > UNKNOWN_KID_RELOAD_MIN {
            self.reload().await?;
        }
        let validation = validation(&self.config);
        let decoded = {
            let ring = read(&self.ring);
            let key = ring.verifying.get(&kid).ok_or_else(invalid)?;
            jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|_| invalid())?
        };
        let claims = self.to_claims(decoded.claims)?;
        let now = self.clock.now();
        if claims.issued_at > now + SKEW {
            return Err(invalid());
        }
        if claims.expires_at <= now {
            return Err(Error::Unauthenticated(AuthFailure::Expired));
        }
        Ok(claims)
    }

    async fn rotate(&self) -> Result<SigningKeyId> {
        let pair = Ed25519KeyPair::generate()
            .map_err(|_| Error::internal("generating an Ed25519 key failed"))?;
        let pkcs8 = pair
            .to_pkcs8()
            .map_err(|_| Error::internal("encoding the Ed25519 key failed"))?;
        let now = self.clock.now();
        let record = SigningKeyRecord {
            id: SigningKeyId::generate(),
            algorithm: "EdDSA".into(),
            private_key: PrivateKeyDer(pkcs8.as_ref().to_vec()),
            public_key: pair.public_key().as_ref().to_vec(),
            created_at: now,
            retired_at: None,
        };
        let mut tx = self.store.platform().await?;
        tx.insert_signing_key(&record).await?;
        tx.retire_signing_keys(record.id, now).await?;
        tx.commit().await?;
        self.reload().await?;
        tracing::info!(kid = %record.id, "signing key rotated");
        Ok(record.id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config() -> JwtConfig {
        JwtConfig {
            issuer: "karen".into(),
            audience: "karen".into(),
            ttl: Duration::from_secs(900),
        }
    }

    fn claims(iss: &str, aud: &str) -> Claims {
        Claims {
            iss: iss.into(),
            aud: aud.into(),
            sub: Uuid::now_v7(),
            tid: Uuid::now_v7(),
            sid: Uuid::now_v7(),
            iat: 1_700_000_000,
            exp: 1_700_000_900,
        }
    }

    #[test]
    fn a_foreign_audience_or_issuer_is_refused_under_the_right_key() {
        let pair = Ed25519KeyPair::generate().unwrap();
        let pkcs8 = pair.to_pkcs8().unwrap();
        let signing = EncodingKey::from_ed_der(pkcs8.as_ref());
        let verifying = DecodingKey::from_ed_der(pair.public_key().as_ref());
        let header = Header::new(Algorithm::EdDSA);
        let sign = |body: &Claims| jsonwebtoken::encode(&header, body, &signing).unwrap();
        let check =
            |token: &str| jsonwebtoken::decode::<Claims>(token, &verifying, &validation(&config()));
        check(&sign(&claims("karen", "karen"))).unwrap();
        for (iss, aud) in [
            ("karen", "another-service"),
            ("someone-else", "karen"),
            ("karen", ""),
            ("", "karen"),
        ] {
            assert!(
                check(&sign(&claims(iss, aud))).is_err(),
                "iss {iss:?}, aud {aud:?} accepted"
            );
        }
    }
}
