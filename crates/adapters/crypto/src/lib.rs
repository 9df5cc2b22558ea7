//! Karen's cryptography adapters: argon2id password hashing and Ed25519-signed
//! access tokens (JWT) with persisted, rotatable signing keys, and envelope
//! encryption (AES-256-GCM data keys wrapped under a master key).

mod audit_key;
mod envelope;
mod key_file;
mod password;
mod tokens;

pub use audit_key::{FileAuditSigner, verify_ed25519};
pub use envelope::{AesGcmCipher, LocalKeyProvider, MASTER_KEY_ENV};
pub use password::{Argon2Hasher, Argon2Params};
pub use tokens::{JwtConfig, JwtTokens};

/// Installs aws-lc-rs as the process-wide rustls provider. Call first thing in
/// `main` and in test setup: without it the first TLS use panics.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls_provider::install();
}

mod rustls_provider {
    pub(super) fn install() -> Result<(), ()> {
        rustls::crypto::aws_lc_rs::default_provider()
            .install_default()
            .map_err(drop)
    }
}
