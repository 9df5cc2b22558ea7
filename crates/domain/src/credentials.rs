//! Stored credentials: API keys, sessions and refresh tokens, operator keys and
//! token-signing keys. Secrets are stored only as hashes (or, for signing keys,
//! as key material that never leaves the server).

use std::fmt;

use time::OffsetDateTime;

use crate::permission::PermissionSet;
use crate::values::Label;
use crate::{
    ApiKeyId, Error, OperatorKeyId, PasswordTokenId, RefreshTokenId, SessionId, SigningKeyId,
    TenantId, UserId,
};

/// A SHA-256 digest of a high-entropy secret (API key, refresh token).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(***)")
    }
}

/// A tenant API key (the secret itself is shown once at creation).
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    /// The user whose rights the key carries (a subset of them).
    pub user_id: UserId,
    pub name: Label,
    /// The first characters of the key, safe to show, to recognise it.
    pub display_prefix: String,
    pub secret_hash: SecretHash,
    pub scopes: PermissionSet,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl ApiKeyRecord {
    /// Whether the key may still be used at `now`.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// A login session: one family of rotating refresh tokens.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: SessionId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A live session with the time it was last used: when it was opened or its
/// refresh token last exchanged (the newest refresh token's issue time).
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub session: SessionRecord,
    pub last_used_at: OffsetDateTime,
}

/// One refresh token of a session. Each is usable once; presenting a spent one
/// again revokes the whole session (reuse detection).
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    pub id: RefreshTokenId,
    pub tenant_id: TenantId,
    pub session_id: SessionId,
    pub user_id: UserId,
    pub secret_hash: SecretHash,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// Why a password token was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordTokenPurpose {
    /// The account was created without a password: its first one.
    Setup,
    /// An administrator reset a forgotten password.
    Reset,
}

impl PasswordTokenPurpose {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PasswordTokenPurpose::Setup => "setup",
            PasswordTokenPurpose::Reset => "reset",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "setup" => Ok(PasswordTokenPurpose::Setup),
            "reset" => Ok(PasswordTokenPurpose::Reset),
            other => Err(Error::internal(format!(
                "unknown password token purpose '{other}' in store"
            ))),
        }
    }
}

/// A single-use token that lets its holder set a user's password once, until
/// it expires. Only the SHA-256 digest of the token is stored.
#[derive(Debug, Clone)]
pub struct PasswordTokenRecord {
    pub id: PasswordTokenId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub secret_hash: SecretHash,
    pub purpose: PasswordTokenPurpose,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
    /// Who issued it (`kind:id`, as in the audit trail).
    pub created_by: String,
}

impl PasswordTokenRecord {
    /// Whether the token may still be used at `now`.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.used_at.is_none() && self.expires_at > now
    }
}

/// A platform operator key (manages tenants; holds no tenant role).
#[derive(Debug, Clone)]
pub struct OperatorKeyRecord {
    pub id: OperatorKeyId,
    pub name: Label,
    pub secret_hash: SecretHash,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// Private key material; redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyDer(pub Vec<u8>);

impl fmt::Debug for PrivateKeyDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyDer(***)")
    }
}

/// An access-token signing key. The newest unretired key signs; retired keys still
/// verify until every token they signed has expired.
#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub id: SigningKeyId,
    /// JOSE algorithm name (`EdDSA`).
    pub algorithm: String,
    /// PKCS#8 private key.
    pub private_key: PrivateKeyDer,
    /// Raw public key.
    pub public_key: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub retired_at: Option<OffsetDateTime>,
}
