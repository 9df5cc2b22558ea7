//! Password hashing with argon2id (OWASP parameters by default), run on the
//! blocking pool and bounded in concurrency so a login flood cannot exhaust
//! memory or starve the async runtime.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash as Phc;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use karen_domain::ports::PasswordHasher;
use karen_domain::user::{Password, PasswordHash};
use karen_domain::{Error, Result};
use tokio::sync::Semaphore;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy)]
pub struct Argon2Params {
    /// Memory in KiB (OWASP: 19456).
    pub memory_kib: u32,
    /// Passes (OWASP: 2).
    pub iterations: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
        }
    }
}

/// The argon2id hasher.
pub struct Argon2Hasher {
    params: Params,
    /// A hash of a random password, verified against when the account does not
    /// exist so that timing does not reveal which emails are registered.
    dummy: String,
    permits: Arc<Semaphore>,
}

impl Argon2Hasher {
    /// A hasher with `params`, allowing `concurrency` hashes at once.
    pub fn new(params: Argon2Params, concurrency: usize) -> Result<Self> {
        let params = Params::new(params.memory_kib, params.iterations, 1, None).map_err(|e| {
            Error::invalid(
                Some("auth.password_hash"),
                format!("invalid argon2 parameters: {e}"),
            )
        })?;
        let mut random = [0u8; 32];
        aws_lc_rs::rand::fill(&mut random)
            .map_err(|_| Error::internal("system random generator failed"))?;
        let dummy = argon(&params)
            .hash_password(&random)
            .map_err(|e| Error::internal(format!("argon2: {e}")))?
            .to_string();
        Ok(Self {
            params,
            dummy,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::internal("hasher closed"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::internal(format!("hashing task: {e}")))
    }
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &Password) -> Result<PasswordHash> {
        let params = self.params.clone();
        let bytes = zeroize::Zeroizing::new(password.expose().as_bytes().to_vec());
        let phc = self
            .blocking(move || argon(&params).hash_password(&bytes).map(|h| h.to_string()))
            .await?
            .map_err(|e| Error::internal(format!("argon2: {e}")))?;
        Ok(PasswordHash::new(phc))
    }

    async fn verify(&self, password: &Password, hash: Option<&PasswordHash>) -> Result<bool> {
        let known = hash.is_some();
        let phc = hash.map_or_else(|| self.dummy.clone(), |h| h.as_str().to_owned());
        let params = self.params.clone();
        let bytes = zeroize::Zeroizing::new(password.expose().as_bytes().to_vec());
        let matched = self
            .blocking(move || {
                let parsed = Phc::new(&phc)
                    .map_err(|e| Error::internal(format!("stored password hash: {e}")))?;
                Ok::<bool, Error>(argon(&params).verify_password(&bytes, &parsed).is_ok())
            })
            .await??;
        Ok(known && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let hasher = Argon2Hasher::new(
            Argon2Params {
                memory_kib: 1024,
                iterations: 1,
            },
            2,
        )
        .unwrap();
        let password = Password::parse("correct horse battery").unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.as_str().starts_with("$argon2id$"));
        assert!(hasher.verify(&password, Some(&hash)).await.unwrap());
        assert!(
            !hasher
                .verify(&Password::presented("wrong horse battery"), Some(&hash))
                .await
                .unwrap()
        );
        assert!(!hasher.verify(&password, None).await.unwrap());
        assert_ne!(hasher.hash(&password).await.unwrap(), hash, "salts differ");
    }
}
