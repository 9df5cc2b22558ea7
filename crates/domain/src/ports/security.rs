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

/// A tenant's 256-bit data key, in the clear. Zeroized when dropped; never
/// shown by `Debug`.
pub struct DataKey(secrecy::SecretBox<[u8; 32]>);

impl DataKey {
    /// Wraps raw key bytes (the caller zeroizes its copy).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(secrecy::SecretBox::new(Box::new(bytes)))
    }

    /// The raw key bytes, for the cipher.
    pub fn expose(&self) -> &[u8; 32] {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

/// Wraps and unwraps tenant data keys under a master key. The local
/// implementation keeps the master key in a file or the environment; an
/// external KMS implements the same trait.
#[async_trait]
pub trait KeyProvider: Send + Sync + 'static {
    /// Identifies the master key (stored next to every key it wraps, so a
    /// wrong master key is named as such rather than failing obscurely).
    fn key_id(&self) -> &str;
    /// Encrypts `key`, bound to `context` (the tenant and key version).
    async fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>>;
    /// Decrypts a wrapped key; fails if it was wrapped under another master
    /// key or for another `context`.
    async fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey>;
}

/// Authenticated encryption of stored values under a data key (AES-256-GCM
/// with a random 96-bit nonce per value).
pub trait DataCipher: Send + Sync + 'static {
    /// A fresh random data key.
    fn generate_key(&self) -> Result<DataKey>;
    /// `nonce || ciphertext || tag` of `plaintext`, bound to `associated_data`.
    fn seal(&self, key: &DataKey, associated_data: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;
    /// The plaintext of `seal`'s output; fails (never returns garbage) on a
    /// wrong key, changed bytes or different associated data.
    fn open(&self, key: &DataKey, associated_data: &[u8], sealed: &[u8]) -> Result<Vec<u8>>;
}

/// One version of a tenant's data key, as `karen keys status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeyInfo {
    pub version: u32,
    /// The master key it is wrapped under.
    pub master_key_id: String,
    pub created_at: OffsetDateTime,
    /// Set once a newer version has taken over; the key still decrypts old rows.
    pub retired_at: Option<OffsetDateTime>,
}

/// Where re-encryption under a new data key version has got to: the index of
/// the sealed column (in the store's fixed list) and the last row id done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResealCursor {
    pub column: usize,
    pub after: Option<uuid::Uuid>,
}

/// What one re-encryption batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResealBatch {
    /// `table.column` the batch worked on.
    pub column: &'static str,
    /// Rows read and rows re-encrypted (rows already under the current version are left alone).
    pub scanned: u64,
    pub resealed: u64,
    /// Where the next batch starts; `None` when every sealed column is done.
    pub next: Option<ResealCursor>,
}

/// A tenant's data keys (envelope encryption), in a tenant transaction.
#[async_trait]
pub trait TenantKeyRepo: Send {
    /// Every version of the tenant's data key, oldest first.
    async fn key_versions(&mut self) -> Result<Vec<TenantKeyInfo>>;
    /// Makes a new data key version current (generated, wrapped under the
    /// master key); new values are sealed with it from now on.
    async fn add_key_version(&mut self, at: OffsetDateTime) -> Result<u32>;
    /// Re-encrypts up to `limit` sealed values from `cursor` on with the
    /// current version (plain values included).
    async fn reseal_batch(&mut self, cursor: ResealCursor, limit: u32) -> Result<ResealBatch>;
    /// Marks every version other than the current one retired.
    async fn retire_old_key_versions(&mut self, at: OffsetDateTime) -> Result<u64>;
    /// Re-wraps every version not yet under `new_master` (unwrapping with the
    /// configured master key); answers how many were re-wrapped. Idempotent.
    async fn rewrap_keys(&mut self, new_master: &dyn KeyProvider) -> Result<u64>;
}
