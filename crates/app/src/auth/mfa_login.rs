//! The second step of a login. A correct password of a user with an
//! authenticator (or one the tenant's policy requires) earns only a challenge:
//! an opaque `krm_…` credential, valid a few minutes, usable once, accepted by
//! nothing but the two routes of this step. Wrong codes count as failed logins
//! (waits, lockout, the per-address limit) and are audited.

use std::time::Duration;

use karen_domain::audit::Outcome;
use karen_domain::error::AuthFailure;
use karen_domain::mfa::{ChallengePurpose, MfaChallengeRecord, TotpState};
use karen_domain::ports::TenantTx;
use karen_domain::tenant::Tenant;
use karen_domain::user::{User, UserStatus};
use karen_domain::{
    Actor, Error, MfaChallengeId, Result, SystemReason, TenantId, TenantScope, UserId,
};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::login::ip_key;
use super::mfa::TotpEnrollment;
use super::{AuthService, ClientInfo, TokenPair, totp};
use crate::audit::Record;
use crate::credentials::{self, Kind};

/// How long the second step may take.
const CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);

/// A pending second step, handed to the client once.
pub struct MfaChallenge {
    pub token: SecretString,
    pub purpose: ChallengePurpose,
    pub expires_in_secs: u64,
}

/// The second factor presented with a challenge.
pub enum SecondFactor {
    /// A six-digit code from the authenticator app.
    Totp(String),
    /// One of the recovery codes shown at enrollment.
    RecoveryCode(String),
}

fn invalid() -> Error {
    Error::Unauthenticated(AuthFailure::Invalid)
}

fn bad_code() -> Error {
    Error::Unauthenticated(AuthFailure::BadMfaCode)
}

/// A challenge that was found live, with its tenant and user.
struct OpenChallenge {
    tx: Box<dyn TenantTx>,
    challenge: MfaChallengeRecord,
    user: User,
}

impl AuthService {
    /// Whether `user`, whose password was right, must pass a second step, and which.
    pub(super) async fn second_step(
        &self,
        tx: &mut dyn TenantTx,
        tenant: &Tenant,
        user: &User,
    ) -> Result<Option<ChallengePurpose>> {
        if tx
            .mfa()
            .totp(user.id)
            .await?
            .is_some_and(|t| t.state == TotpState::Active)
        {
            return Ok(Some(ChallengePurpose::Verify));
        }
        let policy = tenant.settings.mfa_required;
        if policy == karen_domain::mfa::MfaRequirement::Off {
            return Ok(None);
        }
        let permissions = crate::users::permissions_of_user(tx, user).await?;
        Ok(policy
            .applies_to(permissions)
            .then_some(ChallengePurpose::Enroll))
    }

    /// Stores a new challenge for `user` in `tx` and returns its credential.
    pub(super) async fn issue_challenge(
        &self,
        tx: &mut dyn TenantTx,
        tenant: TenantId,
        user: UserId,
        purpose: ChallengePurpose,
        now: OffsetDateTime,
    ) -> Result<MfaChallenge> {
        let id = MfaChallengeId::generate();
        let minted = credentials::mint(Kind::MfaChallenge, &[tenant.as_uuid(), id.as_uuid()])?;
        tx.mfa()
            .insert_challenge(&MfaChallengeRecord {
                id,
                tenant_id: tenant,
                user_id: user,
                secret_hash: minted.hash,
                purpose,
                expires_at: now + CHALLENGE_TTL,
                used_at: None,
                created_at: now,
            })
            .await?;
        let record = Record::new("auth.login.challenge")
            .target("user", user)
            .after(&serde_json::json!({ "purpose": purpose.as_str() }));
        self.deps
            .audit(tx, Actor::System(SystemReason::Login), record)
            .await?;
        Ok(MfaChallenge {
            token: minted.text,
            purpose,
            expires_in_secs: CHALLENGE_TTL.as_secs(),
        })
    }

    /// Finds a live challenge (unknown, forged, spent or expired: `invalid_token`)
    /// and checks its tenant and user may still sign in.
    async fn open_challenge(&self, text: &str, now: OffsetDateTime) -> Result<OpenChallenge> {
        let presented = credentials::parse(Kind::MfaChallenge, text.trim())?;
        let (tenant, id) = presented.tenant_and_id()?;
        let id = MfaChallengeId::from_uuid(id);
        let mut tx = self
            .deps
            .store
            .tenant(TenantScope::system(tenant, SystemReason::Login))
            .await?;
        let challenge = tx.mfa().challenge(id).await?.ok_or_else(invalid)?;
        if !presented.matches(&challenge.secret_hash)
            || challenge.used_at.is_some()
            || challenge.expires_at <= now
        {
            return Err(invalid());
        }
        tx.tenant().await?.ensure_usable()?;
        let user = tx
            .users()
            .user_by_id(challenge.user_id)
            .await?
            .ok_or_else(invalid)?;
        if user.status == UserStatus::Disabled {
            return Err(Error::UserDisabled);
        }
        Ok(OpenChallenge {
            tx,
            challenge,
            user,
        })
    }

    /// Starts enrollment for a user whose tenant requires a second factor,
    /// with the challenge their password earned (the challenge stays usable).
    pub async fn enroll_at_login(&self, challenge: &str) -> Result<TotpEnrollment> {
        let now = self.deps.clock.now();
        let OpenChallenge {
            mut tx,
            challenge,
            user,
        } = self.open_challenge(challenge, now).await?;
        if challenge.purpose != ChallengePurpose::Enroll {
            return Err(Error::Conflict(
                "this account already has an authenticator: send its code to POST /v1/auth/login/mfa".into(),
            ));
        }
        let enrollment = self
            .start_pending_totp(&mut *tx, &user, Actor::User(user.id), now)
            .await?;
        tx.commit().await?;
        Ok(enrollment)
    }

    /// Finishes a login with a second factor. For a challenge that asked to
    /// enroll, the code activates the new authenticator and the recovery codes
    /// are returned too (once).
    pub async fn complete_login(
        &self,
        challenge: &str,
        factor: SecondFactor,
        client: &ClientInfo,
    ) -> Result<(TokenPair, Option<Vec<SecretString>>)> {
        let ip_key = ip_key(client);
        self.check_ip(ip_key.as_ref()).await?;
        let now = self.deps.clock.now();
        let OpenChallenge {
            mut tx,
            challenge,
            user,
        } = self.open_challenge(challenge, now).await?;
        if let Some(wait) = self.wait_before_next_attempt(&user.login_failures, now) {
            self.record_refusal_as(&mut *tx, "auth.mfa.failed", Some(user.id), Outcome::Denied)
                .await?;
            tx.commit().await?;
            return Err(wait);
        }
        let (accepted, method) = match (challenge.purpose, &factor) {
            (ChallengePurpose::Verify, SecondFactor::Totp(code)) => (
                self.accept_totp(&mut *tx, user.id, code, now).await?,
                "totp",
            ),
            (ChallengePurpose::Verify, SecondFactor::RecoveryCode(code)) => {
                let hash = totp::recovery_code_hash(code);
                let used = tx.mfa().use_recovery_code(user.id, &hash, now).await?;
                (used, "recovery_code")
            }
            (ChallengePurpose::Enroll, SecondFactor::Totp(code)) => (
                self.activate_pending(&mut *tx, user.id, code, now).await?,
                "totp_enrollment",
            ),
            (ChallengePurpose::Enroll, SecondFactor::RecoveryCode(_)) => {
                return Err(Error::invalid(
                    Some("recovery_code"),
                    "this account has no recovery codes yet: enroll an authenticator with POST /v1/auth/login/mfa/enroll, then send its code",
                ));
            }
        };
        if !accepted {
            let refusal = self
                .refuse_failed_attempt(tx, "auth.mfa.failed", user.id, ip_key.as_ref(), now)
                .await?;
            return Err(refusal.unwrap_or_else(bad_code));
        }
        if !tx.mfa().spend_challenge(challenge.id, now).await? {
            return Err(invalid());
        }
        let recovery_codes = if challenge.purpose == ChallengePurpose::Enroll {
            let codes = self.new_recovery_codes(&mut *tx, user.id, now).await?;
            let record = Record::new("auth.mfa.enable").target("user", user.id);
            self.deps
                .audit(&mut *tx, Actor::User(user.id), record)
                .await?;
            Some(codes)
        } else {
            None
        };
        if method == "recovery_code" {
            let left = tx.mfa().recovery_codes_left(user.id).await?;
            let record = Record::new("auth.mfa.recovery_code.use")
                .target("user", user.id)
                .after(&serde_json::json!({ "recovery_codes_left": left }));
            self.deps
                .audit(&mut *tx, Actor::User(user.id), record)
                .await?;
        }
        let pair = self
            .open_session(&mut *tx, challenge.tenant_id, user.id, client, now, method)
            .await?;
        tx.commit().await?;
        Ok((pair, recovery_codes))
    }
}
