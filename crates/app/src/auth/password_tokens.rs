//! Single-use, expiring password tokens (`kps_…`). An account created
//! without a password gets a setup token instead of a usable password, and an
//! administrator resets a forgotten password by issuing a reset token; the
//! holder sets a password with it once, which ends every session of the
//! account and signs nobody in (the next login asks for the second factor as
//! usual). Only a digest is stored; a new token supersedes the user's earlier
//! ones.

use karen_domain::audit::{ActorRecord, Outcome};
use karen_domain::credentials::{PasswordTokenPurpose, PasswordTokenRecord};
use karen_domain::error::AuthFailure;
use karen_domain::password_policy::PasswordContext;
use karen_domain::ports::TenantTx;
use karen_domain::user::{Password, UserStatus};
use karen_domain::values::Email;
use karen_domain::{Actor, Error, PasswordTokenId, Result, SystemReason, TenantScope, UserId};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::login::ip_key;
use super::sessions::end_all_sessions;
use super::{AuthService, ClientInfo};
use crate::Deps;
use crate::audit::Record;
use crate::credentials::{self, Kind};

/// A password token handed out once, with the moment it stops working.
pub struct PasswordSetup {
    pub token: SecretString,
    pub expires_at: OffsetDateTime,
}

fn invalid() -> Error {
    Error::Unauthenticated(AuthFailure::Invalid)
}

/// Refuses a new password of an account that contains a word of its
/// organisation (slug, name) or of its email address.
pub(crate) fn check_new_password(
    password: &Password,
    tenant_slug: &str,
    tenant_name: &str,
    email: &Email,
) -> Result<()> {
    let context = PasswordContext::new()
        .organisation(tenant_slug, tenant_name)
        .email(email);
    password.check_context(&context)
}

/// Issues a password token for `user` of `tx`'s tenant, superseding the
/// user's earlier tokens, and records who issued it (never the token).
pub(crate) async fn issue_password_token(
    deps: &Deps,
    tx: &mut dyn TenantTx,
    user: UserId,
    purpose: PasswordTokenPurpose,
    actor: Actor,
) -> Result<PasswordSetup> {
    let tenant = tx.tenant_id();
    let id = PasswordTokenId::generate();
    let minted = credentials::mint(Kind::PasswordToken, &[tenant.as_uuid(), id.as_uuid()])?;
    let now = deps.clock.now();
    let expires_at = now + deps.policy.password_setup_ttl;
    tx.password_tokens()
        .replace_password_token(&PasswordTokenRecord {
            id,
            tenant_id: tenant,
            user_id: user,
            secret_hash: minted.hash,
            purpose,
            created_at: now,
            expires_at,
            used_at: None,
            created_by: ActorRecord::label(actor),
        })
        .await?;
    let action = match purpose {
        PasswordTokenPurpose::Setup => "user.password_setup.issued",
        PasswordTokenPurpose::Reset => "user.password_reset.issued",
    };
    let record = Record::new(action)
        .target("user", user)
        .after(&serde_json::json!({ "expires_at": karen_domain::clock::to_millis(expires_at) }));
    deps.audit(tx, actor, record).await?;
    Ok(PasswordSetup {
        token: minted.text,
        expires_at,
    })
}

impl AuthService {
    /// Sets the password of the account a password token was issued for,
    /// spends the token and ends every session of the account. Any token that
    /// cannot be used (unknown, forged, spent, superseded or expired, or its
    /// user disabled or tenant suspended) is `invalid_token`, counted against
    /// the client's address like a failed login.
    pub async fn set_password(
        &self,
        token: &str,
        new_password: Password,
        client: &ClientInfo,
    ) -> Result<()> {
        let ip_key = ip_key(client);
        self.check_ip(ip_key.as_ref()).await?;
        let outcome = self.set_password_with_token(token, new_password).await;
        if matches!(outcome, Err(Error::Unauthenticated(_))) {
            self.note_ip_failure(ip_key.as_ref()).await;
        }
        outcome
    }

    async fn set_password_with_token(&self, text: &str, new_password: Password) -> Result<()> {
        let presented = credentials::parse(Kind::PasswordToken, text.trim())?;
        let (tenant_id, token_id) = presented.tenant_and_id()?;
        let token_id = PasswordTokenId::from_uuid(token_id);
        let now = self.deps.clock.now();
        let mut tx = self
            .deps
            .store
            .tenant(TenantScope::system(tenant_id, SystemReason::Login))
            .await?;
        let token = tx
            .password_tokens()
            .password_token(token_id)
            .await?
            .ok_or_else(invalid)?;
        let tenant = match tx.tenant().await {
            Ok(tenant) => tenant,
            Err(Error::NotFound(_)) => return Err(invalid()),
            Err(error) => return Err(error),
        };
        let mut user = tx
            .users()
            .user_by_id(token.user_id)
            .await?
            .ok_or_else(invalid)?;
        if tenant.ensure_usable().is_err() {
            return Err(invalid());
        }
        if !presented.matches(&token.secret_hash)
            || !token.is_live(now)
            || user.status == UserStatus::Disabled
        {
            self.record_refusal_as(
                &mut *tx,
                "auth.password.set.failed",
                Some(user.id),
                Outcome::Denied,
            )
            .await?;
            tx.commit().await?;
            return Err(invalid());
        }
        // A refused password leaves the token usable and writes nothing.
        check_new_password(
            &new_password,
            tenant.slug.as_str(),
            tenant.name.as_str(),
            &user.email,
        )?;
        if !tx
            .password_tokens()
            .spend_password_token(token.id, now)
            .await?
        {
            return Err(invalid());
        }
        user.password_hash = Some(self.deps.hasher.hash(&new_password).await?);
        user.updated_at = now;
        tx.users().update_user(&user).await?;
        let sessions = end_all_sessions(&mut *tx, user.id, now).await?;
        let record = Record::new("auth.password.set")
            .target("user", user.id)
            .after(&serde_json::json!({
                "purpose": token.purpose.as_str(),
                "sessions_ended": sessions,
            }));
        self.deps
            .audit(&mut *tx, Actor::User(user.id), record)
            .await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %tenant_id, user_id = %user.id, purpose = token.purpose.as_str(), sessions, "password set with a password token; sessions ended");
        Ok(())
    }
}
