//! Erasure of one user's remaining rows (GDPR article 17), after the
//! services have deleted their content through the usual paths.

use async_trait::async_trait;
use serde::Serialize;

use crate::{Result, UserId};

/// How many rows an erasure removed or detached, by kind (never content).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErasedRows {
    pub api_keys: u64,
    pub sessions: u64,
    pub mfa_rows: u64,
    /// Links to the user's identities at single sign-on providers.
    pub sso_identities: u64,
    pub personas: u64,
    pub budgets: u64,
    /// Usage records kept for billing, with user, key and conversation removed.
    pub usage_records_detached: u64,
    pub usage_aggregates: u64,
    /// Documents kept for the tenant, no longer naming their uploader.
    pub documents_detached: u64,
    pub cached_embeddings: u64,
    /// Legal holds that named the user (lifted ones) or were set or lifted by them.
    pub legal_holds_pseudonymised: u64,
}

/// The rows of a user that outlive the deletion of their content.
#[async_trait]
pub trait ErasureRepo: Send {
    /// Deletes `user`'s API keys, sessions and refresh tokens, MFA rows, SSO identity links,
    /// personal personas, user and key budgets, reservations and usage
    /// aggregates; detaches their usage records and kept documents; deletes
    /// the cached embeddings of `content_hashes`; replaces their id in legal
    /// holds with `pseudonym`; and deletes the user row (and role grants).
    async fn erase_user_rows(
        &mut self,
        user: UserId,
        pseudonym: &str,
        content_hashes: &[String],
    ) -> Result<ErasedRows>;
}
