//! Envelope encryption: AES-256-GCM for stored values under per-tenant data
//! keys, and a local key provider that wraps those data keys under a master
//! key read from a file or the environment (base64 of 32 bytes). The master
//! key never reaches logs, errors or `Debug` output.

use std::path::Path;

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use karen_domain::ports::{DataCipher, DataKey, KeyProvider};
use karen_domain::{Error, Result};
use zeroize::{Zeroize as _, Zeroizing};

use crate::key_file::write_private;

/// The environment variable that may hold the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "KAREN_MASTER_KEY";

const TAG_LEN: usize = 16;

fn unavailable(detail: impl Into<String>) -> Error {
    Error::Unavailable {
        component: "encryption",
        detail: detail.into(),
    }
}

fn aes_key(key: &DataKey) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key.expose())
        .map(LessSafeKey::new)
        .map_err(|_| Error::internal("building an AES-256-GCM key failed"))
}

/// AES-256-GCM (aws-lc-rs) with a random 96-bit nonce per value.
#[derive(Debug, Default, Clone, Copy)]
pub struct AesGcmCipher;

impl DataCipher for AesGcmCipher {
    fn generate_key(&self) -> Result<DataKey> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| Error::internal("the random generator failed"))?;
        let key = DataKey::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }

    fn seal(&self, key: &DataKey, associated_data: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| Error::internal("the random generator failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(NONCE_LEN);
        aes_key(key)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data),
                &mut body,
            )
            .map_err(|_| Error::internal("AES-256-GCM encryption failed"))?;
        out.append(&mut body);
        Ok(out)
    }

    fn open(&self, key: &DataKey, associated_data: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::internal("encrypted value is truncated"));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| Error::internal("encrypted value has a bad nonce"))?;
        let mut body = body.to_vec();
        let len = aes_key(key)?
            .open_in_place(nonce, Aad::from(associated_data), &mut body)
            .map_err(|_| {
                Error::internal(
                    "encrypted value does not authenticate (wrong key, changed bytes, or moved from another row)",
                )
            })?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

/// A master key held in memory, loaded from a file or `KAREN_MASTER_KEY`.
pub struct LocalKeyProvider {
    key: DataKey,
    key_id: String,
}

impl std::fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl LocalKeyProvider {
    /// A provider over the base64 text of a 32-byte key (surrounding
    /// whitespace ignored). The error names `source`, never the key.
    pub fn from_base64(text: &str, source: &str) -> Result<Self> {
        let decoded = Zeroizing::new(BASE64.decode(text.trim()).map_err(|_| {
            unavailable(format!(
                "{source}: the master key is not base64 (expected 32 bytes, e.g. from `karen keys generate-master`)"
            ))
        })?);
        let mut bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            unavailable(format!(
                "{source}: the master key must be 32 bytes (got {})",
                decoded.len()
            ))
        })?;
        let provider = Self::from_bytes(bytes);
        bytes.zeroize();
        Ok(provider)
    }

    fn from_bytes(bytes: [u8; 32]) -> Self {
        let key_id = master_key_id(&bytes);
        Self {
            key: DataKey::from_bytes(bytes),
            key_id,
        }
    }

    /// Reads a master key file (base64 of 32 bytes).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?,
        );
        Self::from_base64(&text, &path.display().to_string())
    }

    /// Writes a new random master key to `path` (which must not exist),
    /// readable by the owner only, and returns it.
    pub fn generate_file(path: &Path) -> Result<Self> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| Error::internal("the random generator failed"))?;
        let text = Zeroizing::new(format!("{}\n", BASE64.encode(bytes)));
        let provider = Self::from_bytes(bytes);
        bytes.zeroize();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| unavailable(format!("cannot create {}: {e}", parent.display())))?;
        }
        write_private(path, text.as_bytes())
            .map_err(|e| unavailable(format!("cannot write {}: {e}", path.display())))?;
        Ok(provider)
    }
}

/// A short public id of a master key: 16 hex digits of a SHA-256 over a label
/// and the key (reveals nothing usable about the key).
fn master_key_id(key: &[u8; 32]) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(b"karen master key id v1\0");
    context.update(key);
    let digest = context.finish();
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("local-{hex}")
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>> {
        AesGcmCipher.seal(&self.key, context, key.expose())
    }

    async fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey> {
        let plain = Zeroizing::new(AesGcmCipher.open(&self.key, context, wrapped).map_err(|_| {
            unavailable(format!(
                "a tenant data key does not unwrap under master key {}: the configured master key is wrong",
                self.key_id
            ))
        })?);
        let mut bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::internal("an unwrapped data key is not 32 bytes"))?;
        let key = DataKey::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("karen-master-key-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn values_round_trip_and_are_bound_to_their_associated_data() {
        let cipher = AesGcmCipher;
        let key = cipher.generate_key().unwrap();
        let sealed = cipher
            .seal(&key, b"tenant/messages/content/1", b"secret")
            .unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 6 + TAG_LEN);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            cipher
                .open(&key, b"tenant/messages/content/1", &sealed)
                .unwrap(),
            b"secret"
        );
        // Another row, another key, a flipped bit or a truncation all fail.
        assert!(
            cipher
                .open(&key, b"tenant/messages/content/2", &sealed)
                .is_err()
        );
        let other = cipher.generate_key().unwrap();
        assert!(
            cipher
                .open(&other, b"tenant/messages/content/1", &sealed)
                .is_err()
        );
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(
            cipher
                .open(&key, b"tenant/messages/content/1", &flipped)
                .is_err()
        );
        assert!(cipher.open(&key, b"x", &sealed[..10]).is_err());
    }

    #[test]
    fn nonces_are_fresh_per_value() {
        let cipher = AesGcmCipher;
        let key = cipher.generate_key().unwrap();
        let a = cipher.seal(&key, b"ad", b"same").unwrap();
        let b = cipher.seal(&key, b"ad", b"same").unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn data_keys_wrap_and_unwrap_only_under_the_same_master_and_context() {
        let dir = temp_dir();
        let path = dir.join("master.key");
        let master = LocalKeyProvider::generate_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second generate does not overwrite the key.
        assert!(LocalKeyProvider::generate_file(&path).is_err());
        let reloaded = LocalKeyProvider::from_file(&path).unwrap();
        assert_eq!(master.key_id(), reloaded.key_id());
        assert!(master.key_id().starts_with("local-"));

        let data_key = AesGcmCipher.generate_key().unwrap();
        let wrapped = master.wrap(&data_key, b"tenant-a/1").await.unwrap();
        let unwrapped = reloaded.unwrap(&wrapped, b"tenant-a/1").await.unwrap();
        assert_eq!(unwrapped.expose(), data_key.expose());
        assert!(reloaded.unwrap(&wrapped, b"tenant-b/1").await.is_err());

        let other = LocalKeyProvider::generate_file(&dir.join("other.key")).unwrap();
        assert_ne!(other.key_id(), master.key_id());
        let error = other.unwrap(&wrapped, b"tenant-a/1").await.unwrap_err();
        assert!(error.to_string().contains("master key"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_master_keys_are_refused_without_echoing_them() {
        let error = LocalKeyProvider::from_base64("not base64!!", "KAREN_MASTER_KEY").unwrap_err();
        assert!(error.to_string().contains("KAREN_MASTER_KEY"));
        assert!(!error.to_string().contains("not base64!!"));
        let short = BASE64.encode([7u8; 16]);
        let error = LocalKeyProvider::from_base64(&short, "file").unwrap_err();
        assert!(error.to_string().contains("32 bytes"), "{error}");
        let good = LocalKeyProvider::from_base64(&BASE64.encode([7u8; 32]), "env").unwrap();
        let debug = format!("{good:?}");
        assert!(
            debug.contains("local-") && !debug.contains("key: "),
            "{debug}"
        );
        assert_eq!(
            format!("{:?}", DataKey::from_bytes([1; 32])),
            "DataKey([redacted])"
        );
    }
}
