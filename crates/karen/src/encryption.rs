//! `[encryption]`: encryption at rest of tenant content. Where the master key
//! comes from (`KAREN_MASTER_KEY`, `encryption.master_key_file`, or in minimal
//! mode a key file made in the data dir on first start) and the store's
//! [`Encryption`] component built on it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use karen_crypto::{AesGcmCipher, LocalKeyProvider, MASTER_KEY_ENV};
use karen_domain::Clock;
use karen_domain::ports::KeyProvider;
use karen_sql::Encryption;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Mode};

/// `[encryption]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Encrypt message and memory content, document text and provider
    /// credentials with per-tenant data keys (default on; `false` writes new
    /// content plain, and already encrypted content can then not be read).
    pub enabled: bool,
    /// The master key: a file holding base64 of 32 bytes (`karen keys
    /// generate-master`). Default `<data_dir>/master.key`, created (mode 0600)
    /// on first start in minimal mode. `KAREN_MASTER_KEY` may hold the key
    /// itself instead. Scale-out modes need one of them, the same on every replica.
    pub master_key_file: Option<PathBuf>,
    /// Earlier master key files, used only to unwrap data keys not yet
    /// re-wrapped: configure the new master with the old one here on every
    /// replica, then run `karen keys rotate-master`, then drop the old one.
    pub previous_master_key_files: Vec<PathBuf>,
    /// Rows re-encrypted per transaction by `karen keys rotate-tenant`.
    pub rotation_batch: u32,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            master_key_file: None,
            previous_master_key_files: Vec::new(),
            rotation_batch: 500,
        }
    }
}

impl EncryptionConfig {
    /// Problems with these settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=10_000).contains(&self.rotation_batch) {
            problems.push(format!(
                "encryption.rotation_batch: between 1 and 10000 (got {})",
                self.rotation_batch
            ));
        }
        problems
    }
}

/// The configured master key, or `None` when encryption is switched off.
pub fn master_key(config: &Config) -> anyhow::Result<Option<Arc<dyn KeyProvider>>> {
    let settings = &config.encryption;
    if !settings.enabled {
        tracing::warn!(
            "encryption at rest is switched off (encryption.enabled = false): new content is stored in the clear"
        );
        return Ok(None);
    }
    let from_env = std::env::var(MASTER_KEY_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let provider = match (from_env, &settings.master_key_file) {
        (Some(_), Some(_)) => anyhow::bail!(
            "encryption.master_key_file and {MASTER_KEY_ENV} are both set: keep one source of the master key"
        ),
        (Some(text), None) => LocalKeyProvider::from_base64(&text, MASTER_KEY_ENV)?,
        (None, Some(path)) => LocalKeyProvider::from_file(path)
            .with_context(|| "encryption.master_key_file: cannot load the master key")?,
        (None, None) if config.mode == Mode::Minimal => {
            let path = config.data_dir.join("master.key");
            if path.exists() {
                LocalKeyProvider::from_file(&path)?
            } else {
                let provider = LocalKeyProvider::generate_file(&path)
                    .context("creating the master key for encryption at rest")?;
                tracing::warn!(
                    path = %path.display(),
                    master_key_id = provider.key_id(),
                    "created the master key for encryption at rest; back it up apart from the data: without it the encrypted content cannot be read"
                );
                provider
            }
        }
        (None, None) => anyhow::bail!(
            "encryption.master_key_file: mode '{}' needs a master key shared by every replica; make one with \
             `karen keys generate-master --out FILE` and set encryption.master_key_file (or {MASTER_KEY_ENV}), \
             or set encryption.enabled = false",
            config.mode_name()
        ),
    };
    tracing::info!(
        master_key_id = provider.key_id(),
        "encryption at rest is on"
    );
    Ok(Some(Arc::new(provider)))
}

/// The store's encryption component over the configured master key.
pub fn store_encryption(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<Arc<Encryption>>> {
    let Some(provider) = master_key(config)? else {
        return Ok(None);
    };
    let mut previous: Vec<Arc<dyn KeyProvider>> = Vec::new();
    for path in &config.encryption.previous_master_key_files {
        let key = LocalKeyProvider::from_file(path)
            .context("encryption.previous_master_key_files: cannot load a master key")?;
        previous.push(Arc::new(key));
    }
    Ok(Some(Arc::new(
        Encryption::new(provider, Arc::new(AesGcmCipher), clock).with_previous(previous),
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config_in(mode: Mode) -> (Config, PathBuf) {
        let dir = std::env::temp_dir().join(format!("karen-enc-{}", uuid::Uuid::now_v7()));
        let config = Config {
            mode,
            data_dir: dir.clone(),
            ..Config::default()
        };
        (config, dir)
    }

    #[test]
    fn embedded_mode_makes_a_private_master_key_once_and_keeps_it() {
        if std::env::var(MASTER_KEY_ENV).is_ok() {
            return;
        }
        let (config, dir) = config_in(Mode::Minimal);
        let first = master_key(&config).unwrap().unwrap();
        let path = dir.join("master.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = master_key(&config).unwrap().unwrap();
        assert_eq!(first.key_id(), again.key_id());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn encryption_is_off_only_when_asked_and_scale_out_needs_a_key() {
        if std::env::var(MASTER_KEY_ENV).is_ok() {
            return;
        }
        let (mut config, dir) = config_in(Mode::Minimal);
        config.encryption.enabled = false;
        assert!(master_key(&config).unwrap().is_none());
        assert!(!dir.join("master.key").exists());

        let (config, _) = config_in(Mode::Standard);
        let error = master_key(&config).err().unwrap().to_string();
        assert!(error.contains("encryption.master_key_file"), "{error}");

        let (mut config, dir) = config_in(Mode::Standard);
        let path = dir.join("given.key");
        let made = LocalKeyProvider::generate_file(&path).unwrap();
        config.encryption.master_key_file = Some(path);
        assert_eq!(
            master_key(&config).unwrap().unwrap().key_id(),
            made.key_id()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
