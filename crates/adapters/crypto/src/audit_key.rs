//! The Ed25519 key that signs audit checkpoints, kept in a file (PKCS#8 DER).
//! Created on first start when allowed (embedded mode), with mode 0600; its
//! content is never logged.

use std::path::Path;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use karen_domain::audit::key_id_of;
use karen_domain::ports::AuditSigner;
use karen_domain::{Error, Result};

use crate::key_file::write_private;

/// A checkpoint signer backed by a key file.
pub struct FileAuditSigner {
    pair: Ed25519KeyPair,
    public_key: Vec<u8>,
    key_id: String,
}

impl std::fmt::Debug for FileAuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAuditSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(detail: String) -> Error {
    Error::Unavailable {
        component: "audit signing key",
        detail,
    }
}

impl FileAuditSigner {
    /// Loads the key at `path`; if there is none and `create` is set, makes a
    /// new one there (readable by the owner only).
    pub fn load_or_create(path: &Path, create: bool) -> Result<Self> {
        match std::fs::read(path) {
            Ok(der) => Self::from_pkcs8(&der).map_err(|_| {
                unavailable(format!("{} is not an Ed25519 PKCS#8 key", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let pair = Ed25519KeyPair::generate()
                    .map_err(|_| Error::internal("generating an Ed25519 key failed"))?;
                let der = pair
                    .to_pkcs8()
                    .map_err(|_| Error::internal("encoding the Ed25519 key failed"))?;
                if let Some(parent) = path.parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        unavailable(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                write_private(path, der.as_ref())
                    .map_err(|e| unavailable(format!("cannot write {}: {e}", path.display())))?;
                tracing::info!(path = %path.display(), "created the audit checkpoint signing key");
                Self::from_pkcs8(der.as_ref())
            }
            Err(e) => Err(unavailable(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// A signer over a PKCS#8 v2 Ed25519 key (as `load_or_create` writes).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|_| Error::internal("not an Ed25519 PKCS#8 key"))?;
        let public_key = pair.public_key().as_ref().to_vec();
        let key_id = key_id_of(&public_key);
        Ok(Self {
            pair,
            public_key,
            key_id,
        })
    }
}

impl AuditSigner for FileAuditSigner {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Whether `signature` is `public_key`'s Ed25519 signature of `message`.
pub fn verify_ed25519(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_created_key_is_private_reloads_and_verifies() {
        let dir = std::env::temp_dir().join(format!("karen-audit-key-{}", uuid::Uuid::new_v4()));
        let path = dir.join("audit.key");
        let first = FileAuditSigner::load_or_create(&path, true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = FileAuditSigner::load_or_create(&path, false).unwrap();
        assert_eq!(first.key_id(), again.key_id());
        let signature = again.sign(b"message");
        assert!(verify_ed25519(first.public_key(), b"message", &signature));
        assert!(!verify_ed25519(first.public_key(), b"messagf", &signature));
        assert!(!format!("{first:?}").contains("pair"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
