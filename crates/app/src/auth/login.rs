//! Password login, throttled per IP address and per account: after a few
//! failures each further attempt must wait (doubling up to a cap), and after
//! more the account locks for a while. Waits are refused with `Retry-After`,
//! never slept, so an attacker cannot hold connections open.

use std::time::Duration;

use karen_domain::credentials::SessionRecord;
use karen_domain::error::AuthFailure;
use karen_domain::ports::CacheKey;
use karen_domain::tenant::TenantStatus;
use karen_domain::user::{LoginFailures, Password, UserStatus};
use karen_domain::values::{Email, Slug};
use karen_domain::{Error, Result, SessionId, SystemReason, TenantScope};
use time::OffsetDateTime;

use super::{AuthService, ClientInfo, TokenPair};

/// A login attempt.
pub struct LoginRequest {
    pub tenant: String,
    pub email: String,
    pub password: Password,
}

fn bad_credentials() -> Error {
    Error::Unauthenticated(AuthFailure::BadCredentials)
}

fn until(now: OffsetDateTime, at: OffsetDateTime) -> Duration {
    Duration::try_from(at - now)
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1))
}

impl AuthService {
    /// How long an account with `failures` must still wait before its next attempt.
    fn wait_before_next_attempt(
        &self,
        failures: &LoginFailures,
        now: OffsetDateTime,
    ) -> Option<Error> {
        if let Some(locked_until) = failures.locked_until.filter(|at| *at > now) {
            return Some(Error::AccountLocked {
                retry_after: until(now, locked_until),
            });
        }
        let policy = &self.deps.policy;
        let over = failures.count - policy.delay_after_failures;
        let last = failures.last_failed_at?;
        if over < 0 {
            return None;
        }
        let exponent = u32::try_from(over).unwrap_or(u32::MAX).min(16);
        let delay = Duration::from_secs(1u64 << exponent).min(policy.max_delay);
        let next_allowed = last + delay;
        (next_allowed > now).then(|| Error::LoginThrottled {
            retry_after: until(now, next_allowed),
        })
    }

    async fn note_ip_failure(&self, ip_key: Option<&CacheKey>) {
        if let Some(key) = ip_key
            && let Err(error) = self
                .deps
                .counters
                .hit(key, self.deps.policy.ip_window)
                .await
        {
            tracing::warn!(%error, "could not count a failed login for the client address");
        }
    }

    /// Checks email and password and opens a session.
    pub async fn login(&self, request: LoginRequest, client: &ClientInfo) -> Result<TokenPair> {
        let policy = &self.deps.policy;
        let ip_key = client
            .ip
            .as_deref()
            .map(|ip| CacheKey::global("login_ip", ip));
        if let Some(key) = &ip_key {
            match self.deps.counters.count(key).await {
                Ok(count) if count >= policy.ip_max_failures => {
                    return Err(Error::LoginThrottled {
                        retry_after: policy.ip_window,
                    });
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "login throttle unavailable; continuing without the per-address limit")
                }
            }
        }
        // Malformed tenant or email: answer like a wrong password (after the same work).
        let (Ok(slug), Ok(email)) = (
            Slug::parse(request.tenant.trim()),
            Email::parse(&request.email),
        ) else {
            self.deps.hasher.verify(&request.password, None).await?;
            self.note_ip_failure(ip_key.as_ref()).await;
            return Err(bad_credentials());
        };
        let mut platform = self.deps.store.platform().await?;
        let tenant = platform.tenant_by_slug(&slug).await?;
        platform.commit().await?;
        let Some(tenant) = tenant.filter(|t| t.status != TenantStatus::Deleting) else {
            self.deps.hasher.verify(&request.password, None).await?;
            self.note_ip_failure(ip_key.as_ref()).await;
            return Err(bad_credentials());
        };

        let now = self.deps.clock.now();
        let mut tx = self
            .deps
            .store
            .tenant(TenantScope::system(tenant.id, SystemReason::Login))
            .await?;
        let user = tx.users().user_by_email(&email).await?;
        if let Some(wait) = user
            .as_ref()
            .and_then(|u| self.wait_before_next_attempt(&u.login_failures, now))
        {
            return Err(wait);
        }
        let verified = self
            .deps
            .hasher
            .verify(
                &request.password,
                user.as_ref().and_then(|u| u.password_hash.as_ref()),
            )
            .await?;
        let user = match user {
            Some(user) if verified => user,
            Some(user) => {
                let lock_until = now + policy.lockout_duration;
                let failures = tx
                    .users()
                    .record_login_failure(user.id, now, policy.lockout_after_failures, lock_until)
                    .await?;
                tx.commit().await?;
                self.note_ip_failure(ip_key.as_ref()).await;
                if failures.locked_until.is_some_and(|at| at > now) {
                    tracing::warn!(tenant_id = %tenant.id, user_id = %user.id, "account locked after repeated failed logins");
                    return Err(Error::AccountLocked {
                        retry_after: until(now, lock_until),
                    });
                }
                return Err(bad_credentials());
            }
            None => {
                self.note_ip_failure(ip_key.as_ref()).await;
                return Err(bad_credentials());
            }
        };
        // The password is right: now it is safe to say why access is refused.
        tenant.ensure_usable()?;
        if user.status == UserStatus::Disabled {
            return Err(Error::UserDisabled);
        }
        tx.users().record_login_success(user.id, now).await?;
        let session = SessionRecord {
            id: SessionId::generate(),
            tenant_id: tenant.id,
            user_id: user.id,
            created_at: now,
            expires_at: now + policy.session_ttl,
            revoked_at: None,
            ip: client.ip.clone(),
            user_agent: client
                .user_agent
                .as_deref()
                .map(|ua| ua.chars().take(300).collect()),
        };
        tx.sessions().insert_session(&session).await?;
        let pair = self
            .issue_tokens(&mut *tx, tenant.id, user.id, &session, now)
            .await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %tenant.id, user_id = %user.id, session_id = %session.id, "login succeeded");
        Ok(pair)
    }
}
