//! Second factors of a tenant's users: TOTP authenticators, recovery codes
//! and the pending second steps of logins.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::credentials::SecretHash;
use crate::mfa::{MfaChallengeRecord, TotpRecord};
use crate::{MfaChallengeId, Result, UserId};

/// Second factors, reached through a tenant transaction.
#[async_trait]
pub trait MfaRepo: Send {
    /// The user's authenticator, pending or active.
    async fn totp(&mut self, user: UserId) -> Result<Option<TotpRecord>>;
    /// The users whose authenticator is active (no secret is read).
    async fn active_totp_users(&mut self) -> Result<Vec<UserId>>;
    /// Stores a pending authenticator, replacing a pending one (never an active one:
    /// answers `false` then).
    async fn put_pending_totp(&mut self, totp: &TotpRecord) -> Result<bool>;
    /// Activates the pending authenticator with the step of its first code.
    async fn activate_totp(&mut self, user: UserId, step: i64, at: OffsetDateTime) -> Result<bool>;
    /// Records `step` as used if it is later than the last used one; `false`
    /// means the code was already used (or a later one was).
    async fn use_totp_step(&mut self, user: UserId, step: i64) -> Result<bool>;
    /// Removes the authenticator, the recovery codes and the pending login
    /// steps of the user; `true` if there was an authenticator.
    async fn delete_mfa(&mut self, user: UserId) -> Result<bool>;
    /// Replaces the user's recovery codes by these digests.
    async fn replace_recovery_codes(
        &mut self,
        user: UserId,
        codes: &[SecretHash],
        at: OffsetDateTime,
    ) -> Result<()>;
    /// Marks an unused recovery code used; `false` if there is none with this digest.
    async fn use_recovery_code(
        &mut self,
        user: UserId,
        code: &SecretHash,
        at: OffsetDateTime,
    ) -> Result<bool>;
    /// How many recovery codes the user has not used.
    async fn recovery_codes_left(&mut self, user: UserId) -> Result<i64>;
    async fn insert_challenge(&mut self, challenge: &MfaChallengeRecord) -> Result<()>;
    async fn challenge(&mut self, id: MfaChallengeId) -> Result<Option<MfaChallengeRecord>>;
    /// Marks the challenge used; `false` if it already was (a reuse, or a race lost).
    async fn spend_challenge(&mut self, id: MfaChallengeId, at: OffsetDateTime) -> Result<bool>;
}
