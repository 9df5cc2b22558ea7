//! Password hashing and access tokens.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::user::{Password, PasswordHash};
use crate::{Result, SessionId, SigningKeyId, TenantId, UserId};

/// Hashes and checks passwords (argon2id).
#[async_trait]
pub trait PasswordHasher: Send + Sync + 'static {
    /// Hashes a new password.
    async fn hash(&self, password: &Password) -> Result<PasswordHash>;
    /// Checks a password; with `None` it spends the same time and answers `false`,
    /// so unknown accounts are not revealed by timing.
    async fn verify(&self, password: &Password, hash: Option<&PasswordHash>) -> Result<bool>;
}

/// What an access token asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub session_id: SessionId,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Issues and verifies short-lived signed access tokens.
#[async_trait]
pub trait AccessTokens: Send + Sync + 'static {
    /// Signs claims with the current key.
    async fn issue(&self, claims: &AccessClaims) -> Result<String>;
    /// Verifies signature, algorithm, key id, issuer, audience and expiry;
    /// fails with `invalid_token` or `token_expired`.
    async fn verify(&self, token: &str) -> Result<AccessClaims>;
    /// Makes a new signing key current; older keys keep verifying until their
    /// tokens have expired.
    async fn rotate(&self) -> Result<SigningKeyId>;
}

/// Signs audit checkpoints with an Ed25519 key. The private key never leaves
/// the implementation (not in `Debug`, logs or errors).
pub trait AuditSigner: Send + Sync + 'static {
    /// The key's id (see `audit::key_id_of`).
    fn key_id(&self) -> &str;
    /// The raw 32-byte Ed25519 public key.
    fn public_key(&self) -> &[u8];
    /// A 64-byte Ed25519 signature of `message`.
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}
