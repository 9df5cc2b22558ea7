//! A user's own second factor: enroll a TOTP authenticator (pending until its
//! first code), receive ten single-use recovery codes once, see the state,
//! remove it with a current code or the password. Each TOTP code works once:
//! the last accepted time step is stored and codes of that step or an earlier
//! one are refused.

use karen_domain::mfa::{MfaStatus, TotpRecord, TotpState};
use karen_domain::ports::TenantTx;
use karen_domain::tenant::Tenant;
use karen_domain::user::{Password, User};
use karen_domain::{Actor, Error, Result, Subject, TenantContext, UserId};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::{AuthService, totp};
use crate::audit::Record;

/// A started enrollment: what the authenticator app needs (shown once).
pub struct TotpEnrollment {
    /// The shared secret, base32, for typing in by hand.
    pub secret: SecretString,
    /// The `otpauth://totp/…` URI, for a QR code.
    pub uri: SecretString,
}

/// A user's second factors and whether their tenant requires one of them.
pub struct MfaOverview {
    pub status: MfaStatus,
    pub required: bool,
}

/// How the user's account is labelled in the authenticator app.
fn account_label(tenant: &Tenant, user: &User) -> String {
    format!("{}/{}", tenant.slug, user.email)
}

/// Only a person in a session manages their second factor, not an API key.
fn session_user(ctx: &TenantContext) -> Result<UserId> {
    match ctx.principal().subject {
        Subject::User { .. } => Ok(ctx.principal().user_id),
        Subject::ApiKey { .. } => Err(Error::Forbidden(
            "an API key cannot manage multi-factor authentication; log in with a session".into(),
        )),
    }
}

impl AuthService {
    /// Stores a new pending authenticator for `user` (replacing a pending one)
    /// and records who started it.
    pub(super) async fn start_pending_totp(
        &self,
        tx: &mut dyn TenantTx,
        user: &User,
        actor: Actor,
        now: OffsetDateTime,
    ) -> Result<TotpEnrollment> {
        let tenant = tx.tenant().await?;
        let secret = totp::new_secret()?;
        let record = TotpRecord {
            tenant_id: tx.tenant_id(),
            user_id: user.id,
            secret: secret.clone(),
            state: TotpState::Pending,
            last_used_step: None,
            created_at: now,
            activated_at: None,
        };
        if !tx.mfa().put_pending_totp(&record).await? {
            return Err(Error::Conflict(
                "an authenticator is already active; remove it (DELETE /v1/auth/mfa/totp) before enrolling another".into(),
            ));
        }
        let uri = SecretString::from(totp::uri(&secret, &account_label(&tenant, user))?);
        let audit = Record::new("auth.mfa.totp.start").target("user", user.id);
        self.deps.audit(tx, actor, audit).await?;
        Ok(TotpEnrollment { secret, uri })
    }

    /// Checks a code of the user's active authenticator and uses up its step.
    pub(super) async fn accept_totp(
        &self,
        tx: &mut dyn TenantTx,
        user: UserId,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let Some(record) = tx.mfa().totp(user).await? else {
            return Ok(false);
        };
        if record.state != TotpState::Active {
            return Ok(false);
        }
        match totp::verify(&record.secret, code, now)? {
            Some(step) => tx.mfa().use_totp_step(user, step).await,
            None => Ok(false),
        }
    }

    /// Activates the user's pending authenticator with its first code.
    pub(super) async fn activate_pending(
        &self,
        tx: &mut dyn TenantTx,
        user: UserId,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let record = tx.mfa().totp(user).await?;
        let Some(record) = record.filter(|r| r.state == TotpState::Pending) else {
            return Err(Error::Conflict(
                "no enrollment is pending: start one first (POST /v1/auth/mfa/totp, or POST /v1/auth/login/mfa/enroll during login)".into(),
            ));
        };
        match totp::verify(&record.secret, code, now)? {
            Some(step) => tx.mfa().activate_totp(user, step, now).await,
            None => Ok(false),
        }
    }

    /// Replaces the user's recovery codes by ten new ones (returned once, stored as digests).
    pub(super) async fn new_recovery_codes(
        &self,
        tx: &mut dyn TenantTx,
        user: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SecretString>> {
        let mut codes = Vec::with_capacity(totp::RECOVERY_CODE_COUNT);
        let mut hashes = Vec::with_capacity(totp::RECOVERY_CODE_COUNT);
        for _ in 0..totp::RECOVERY_CODE_COUNT {
            let (code, hash) = totp::new_recovery_code()?;
            codes.push(code);
            hashes.push(hash);
        }
        tx.mfa().replace_recovery_codes(user, &hashes, now).await?;
        Ok(codes)
    }

    /// Starts enrolling an authenticator for the principal's own account.
    pub async fn start_totp(&self, ctx: &TenantContext) -> Result<TotpEnrollment> {
        let user_id = session_user(ctx)?;
        let now = self.deps.clock.now();
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let user = tx
            .users()
            .user_by_id(user_id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        let enrollment = self
            .start_pending_totp(&mut *tx, &user, ctx.scope().actor(), now)
            .await?;
        tx.commit().await?;
        Ok(enrollment)
    }

    /// Activates the pending authenticator with its current code; returns the
    /// ten recovery codes, shown only now.
    pub async fn confirm_totp(&self, ctx: &TenantContext, code: &str) -> Result<Vec<SecretString>> {
        let user_id = session_user(ctx)?;
        let now = self.deps.clock.now();
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        if !self.activate_pending(&mut *tx, user_id, code, now).await? {
            return Err(Error::invalid(
                Some("code"),
                "the code does not match: enter the current six-digit code your authenticator app shows for this account (check the device's clock)",
            ));
        }
        let codes = self.new_recovery_codes(&mut *tx, user_id, now).await?;
        let record = Record::new("auth.mfa.enable").target("user", user_id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), record)
            .await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %ctx.tenant_id(), user_id = %user_id, "multi-factor authentication enabled");
        Ok(codes)
    }

    /// Removes the principal's own authenticator and recovery codes; needs a
    /// current code or the password, and is refused while the tenant's policy
    /// requires a second factor of this user.
    pub async fn remove_totp(
        &self,
        ctx: &TenantContext,
        code: Option<&str>,
        password: Option<&Password>,
    ) -> Result<()> {
        let user_id = session_user(ctx)?;
        let now = self.deps.clock.now();
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let tenant = tx.tenant().await?;
        let Some(record) = tx.mfa().totp(user_id).await? else {
            return Err(Error::NotFound("authenticator"));
        };
        if record.state == TotpState::Active
            && tenant
                .settings
                .mfa_required
                .applies_to(ctx.principal().permissions)
        {
            return Err(Error::Forbidden(
                "your organisation requires multi-factor authentication for your account; an administrator can reset it (DELETE /v1/users/{id}/mfa)".into(),
            ));
        }
        // Guessing codes or the password here counts like failed logins, so a
        // stolen session cannot brute-force its way to removing the factor.
        let user = tx
            .users()
            .user_by_id(user_id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        if let Some(wait) = self.wait_before_next_attempt(&user.login_failures, now) {
            return Err(wait);
        }
        let proven = match (code, password) {
            (Some(code), _) if record.state == TotpState::Active => {
                self.accept_totp(&mut *tx, user_id, code, now).await?
            }
            (Some(code), _) => totp::verify(&record.secret, code, now)?.is_some(),
            (None, Some(password)) => {
                self.deps
                    .hasher
                    .verify(password, user.password_hash.as_ref())
                    .await?
            }
            (None, None) => false,
        };
        if !proven {
            let field = if code.is_some() { "code" } else { "password" };
            let refused = Error::invalid(
                Some(field),
                "removing the authenticator needs a current, unused code from it or your password",
            );
            let locked = self
                .refuse_failed_attempt(tx, "auth.mfa.disable.failed", user_id, None, now)
                .await?;
            return Err(locked.unwrap_or(refused));
        }
        tx.mfa().delete_mfa(user_id).await?;
        let record = Record::new("auth.mfa.disable").target("user", user_id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), record)
            .await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %ctx.tenant_id(), user_id = %user_id, "multi-factor authentication removed");
        Ok(())
    }

    /// The principal's own second factors.
    pub async fn mfa_overview(&self, ctx: &TenantContext) -> Result<MfaOverview> {
        let user_id = ctx.principal().user_id;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let tenant = tx.tenant().await?;
        let totp = tx.mfa().totp(user_id).await?.map(|t| t.state);
        let recovery_codes_left = tx.mfa().recovery_codes_left(user_id).await?;
        tx.commit().await?;
        Ok(MfaOverview {
            status: MfaStatus {
                totp,
                recovery_codes_left,
            },
            required: tenant
                .settings
                .mfa_required
                .applies_to(ctx.principal().permissions),
        })
    }
}
