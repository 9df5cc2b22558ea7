//! Refresh-token rotation with reuse detection, logout, and password change.

use karen_domain::credentials::ActiveSession;
use karen_domain::error::AuthFailure;
use karen_domain::user::{Password, UserStatus};
use karen_domain::{
    Error, RefreshTokenId, Result, SessionId, Subject, SystemReason, TenantContext, TenantScope,
};

use super::{AuthService, TokenPair};
use crate::audit::Record;
use crate::credentials::{self, Kind};

fn invalid() -> Error {
    Error::Unauthenticated(AuthFailure::Invalid)
}

impl AuthService {
    /// Exchanges a refresh token for a new pair. Each refresh token works once:
    /// presenting a spent one again (a stolen copy, or the victim after the
    /// thief) revokes the whole session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair> {
        let presented = credentials::parse(Kind::Refresh, refresh_token.trim())?;
        let (tenant, token_id) = presented.tenant_and_id()?;
        let token_id = RefreshTokenId::from_uuid(token_id);
        let now = self.deps.clock.now();
        let mut tx = self
            .deps
            .store
            .tenant(TenantScope::system(tenant, SystemReason::TokenRefresh))
            .await?;
        let token = tx
            .sessions()
            .refresh_token(token_id)
            .await?
            .ok_or_else(invalid)?;
        if !presented.matches(&token.secret_hash) {
            return Err(invalid());
        }
        if token.used_at.is_some() || !tx.sessions().spend_refresh_token(token_id, now).await? {
            tx.sessions().revoke_session(token.session_id, now).await?;
            let reuse = Record::new("auth.refresh.reused")
                .target("session", token.session_id)
                .outcome(karen_domain::audit::Outcome::Denied);
            self.deps
                .audit(&mut *tx, karen_domain::Actor::User(token.user_id), reuse)
                .await?;
            tx.commit().await?;
            tracing::warn!(tenant_id = %tenant, session_id = %token.session_id, "refresh token reused; session revoked");
            return Err(invalid());
        }
        let session = tx
            .sessions()
            .session(token.session_id)
            .await?
            .ok_or_else(invalid)?;
        if session.revoked_at.is_some() || session.expires_at <= now || token.expires_at <= now {
            return Err(invalid());
        }
        // The presented token was issued at the session's last use (login or
        // the previous exchange): past the idle timeout the session ends.
        if now - token.created_at >= self.deps.policy.session_idle_timeout {
            tx.sessions().revoke_session(session.id, now).await?;
            let idle = Record::new("auth.session.idle_timeout")
                .target("session", session.id)
                .outcome(karen_domain::audit::Outcome::Denied);
            self.deps
                .audit(&mut *tx, karen_domain::Actor::User(token.user_id), idle)
                .await?;
            tx.commit().await?;
            tracing::info!(tenant_id = %tenant, session_id = %session.id, "session idle too long; ended");
            return Err(invalid());
        }
        tx.tenant().await?.ensure_usable()?;
        let user = tx
            .users()
            .user_by_id(token.user_id)
            .await?
            .ok_or_else(invalid)?;
        if user.status == UserStatus::Disabled {
            return Err(Error::UserDisabled);
        }
        let pair = self
            .issue_tokens(&mut *tx, tenant, user.id, &session, now)
            .await?;
        let refreshed = Record::new("auth.refresh").target("session", session.id);
        self.deps
            .audit(&mut *tx, karen_domain::Actor::User(user.id), refreshed)
            .await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Ends the session of the presented access token.
    pub async fn logout(&self, ctx: &TenantContext) -> Result<()> {
        let Subject::User { session_id } = ctx.principal().subject else {
            return Err(Error::Forbidden(
                "an API key has no session to log out of; revoke the key instead".into(),
            ));
        };
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        tx.sessions()
            .revoke_session(session_id, self.deps.clock.now())
            .await?;
        let record = Record::new("auth.logout").target("session", session_id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), record)
            .await?;
        tx.commit().await
    }

    /// The principal's user's live sessions, newest first (at most
    /// [`MAX_LISTED_SESSIONS`]), with the calling session's id.
    pub async fn list_sessions(
        &self,
        ctx: &TenantContext,
    ) -> Result<(Vec<ActiveSession>, Option<SessionId>)> {
        let now = self.deps.clock.now();
        let idle = self.deps.policy.session_idle_timeout;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let sessions = tx
            .sessions()
            .list_user_sessions(ctx.principal().user_id, now, MAX_LISTED_SESSIONS)
            .await?;
        tx.commit().await?;
        let live = sessions
            .into_iter()
            .filter(|s| now - s.last_used_at < idle)
            .collect();
        Ok((live, current_session(ctx)))
    }

    /// Ends one of the principal's user's own sessions (another user's, or
    /// one already ended, is `not_found`).
    pub async fn end_session(&self, ctx: &TenantContext, id: SessionId) -> Result<()> {
        let now = self.deps.clock.now();
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let session = tx
            .sessions()
            .session(id)
            .await?
            .filter(|s| {
                s.user_id == ctx.principal().user_id && s.revoked_at.is_none() && s.expires_at > now
            })
            .ok_or(Error::NotFound("session"))?;
        tx.sessions().revoke_session(session.id, now).await?;
        let record = Record::new("auth.session.end").target("session", session.id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), record)
            .await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %ctx.tenant_id(), session_id = %session.id, "session ended by its user");
        Ok(())
    }

    /// Ends every session of the principal's user, on every device.
    pub async fn logout_everywhere(&self, ctx: &TenantContext) -> Result<u64> {
        let now = self.deps.clock.now();
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let revoked = end_all_sessions(&mut *tx, ctx.principal().user_id, now).await?;
        let record = Record::new("auth.logout.everywhere").target("user", ctx.principal().user_id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), record)
            .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Changes the principal's own password (the current one is required) and
    /// ends every other session.
    pub async fn change_password(
        &self,
        ctx: &TenantContext,
        current: &Password,
        new: Password,
    ) -> Result<()> {
        let user_id = ctx.principal().user_id;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let mut user = tx
            .users()
            .user_by_id(user_id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        verify_current_password(&self.deps, &user, current).await?;
        let tenant = tx.tenant().await?;
        super::check_new_password(
            &new,
            tenant.slug.as_str(),
            tenant.name.as_str(),
            &user.email,
        )?;
        let now = self.deps.clock.now();
        user.password_hash = Some(self.deps.hasher.hash(&new).await?);
        user.updated_at = now;
        tx.users().update_user(&user).await?;
        let keep = current_session(ctx);
        let sessions = tx
            .sessions()
            .revoke_user_sessions(user_id, keep, now)
            .await?;
        let record = Record::new("user.password.change").target("user", user_id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), record)
            .await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %ctx.tenant_id(), user_id = %user_id, sessions, "password changed");
        Ok(())
    }
}

/// Refuses a change of `user`'s sign-in attributes unless `current` is their
/// current password (`current_password` is the field that carries it).
pub(crate) async fn verify_current_password(
    deps: &crate::Deps,
    user: &karen_domain::user::User,
    current: &Password,
) -> Result<()> {
    if !deps
        .hasher
        .verify(current, user.password_hash.as_ref())
        .await?
    {
        return Err(Error::invalid(
            Some("current_password"),
            "the current password is incorrect",
        ));
    }
    Ok(())
}

/// The most sessions `GET /v1/auth/sessions` lists.
pub const MAX_LISTED_SESSIONS: u32 = 200;

/// The session of an access token (an API key has none).
fn current_session(ctx: &TenantContext) -> Option<SessionId> {
    match ctx.principal().subject {
        Subject::User { session_id } => Some(session_id),
        Subject::ApiKey { .. } => None,
    }
}

/// Revokes every session of `user` and refuses access tokens issued before now.
pub(crate) async fn end_all_sessions(
    tx: &mut dyn karen_domain::ports::TenantTx,
    user: karen_domain::UserId,
    now: time::OffsetDateTime,
) -> Result<u64> {
    let revoked = tx.sessions().revoke_user_sessions(user, None, now).await?;
    if let Some(mut record) = tx.users().user_by_id(user).await? {
        record.sessions_valid_after = now;
        record.updated_at = now;
        tx.users().update_user(&record).await?;
    }
    Ok(revoked)
}
