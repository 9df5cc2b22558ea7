//! Password login, throttled per IP address and per account: after a few
//! failures each further attempt must wait (doubling up to a cap), and after
//! more the account locks for a while. Waits are refused with `Retry-After`,
//! never slept, so an attacker cannot hold connections open.
//!
//! Addresses that are not accounts (unknown email, unknown tenant) are
//! throttled and "locked" exactly like real accounts, from counters instead of
//! the user row, so the answers never reveal which accounts exist.

use std::time::Duration;

use karen_domain::audit::Outcome;
use karen_domain::clock::{from_millis, to_millis};
use karen_domain::credentials::SessionRecord;
use karen_domain::error::AuthFailure;
use karen_domain::ports::{CacheKey, TenantTx};
use karen_domain::tenant::TenantStatus;
use karen_domain::user::{LoginFailures, Password, UserStatus};
use karen_domain::values::{Email, Slug};
use karen_domain::{
    Actor, BuiltinRole, Error, Result, SessionId, SystemReason, TenantId, TenantScope, UserId,
};
use time::OffsetDateTime;

use super::{AuthService, ClientInfo, LoginOutcome, TokenPair};
use crate::audit::Record;

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

/// Counter keys standing in for the failure columns of an account that does not exist.
struct PhantomAccount {
    failures: CacheKey,
    last_failure: CacheKey,
    lock: CacheKey,
}

impl PhantomAccount {
    fn new(tenant: Option<TenantId>, slug: &Slug, email: &Email) -> Self {
        let key = |kind: &'static str| match tenant {
            Some(tenant) => CacheKey::tenant(tenant, kind, email.as_str()),
            None => CacheKey::global(kind, &format!("{slug}/{email}")),
        };
        Self {
            failures: key("login_failures"),
            last_failure: key("login_last_failure"),
            lock: key("login_lock"),
        }
    }
}

/// The counter of failed sign-ins from the client's address.
pub(crate) fn ip_key(client: &ClientInfo) -> Option<CacheKey> {
    client
        .ip
        .as_deref()
        .map(|ip| CacheKey::global("login_ip", ip))
}

impl AuthService {
    /// Records a refused sign-in (of `user`, when the account exists) in `tx`.
    pub(super) async fn record_refusal(
        &self,
        tx: &mut dyn TenantTx,
        user: Option<UserId>,
        outcome: Outcome,
    ) -> Result<()> {
        self.record_refusal_as(tx, "auth.login.failed", user, outcome)
            .await
    }

    /// Records a refused sign-in step named `action`.
    pub(crate) async fn record_refusal_as(
        &self,
        tx: &mut dyn TenantTx,
        action: &'static str,
        user: Option<UserId>,
        outcome: Outcome,
    ) -> Result<()> {
        let mut record = Record::new(action).outcome(outcome);
        if let Some(user) = user {
            record = record.target("user", user);
        }
        self.deps
            .audit(tx, Actor::System(SystemReason::Login), record)
            .await
    }

    /// Refuses the attempt if the account must still wait or is locked.
    pub(super) fn wait_before_next_attempt(
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
        // Failures fade after the same window for accounts and non-accounts alike.
        if over < 0 || last + self.decay_window() < now {
            return None;
        }
        let exponent = u32::try_from(over).unwrap_or(u32::MAX).min(16);
        let delay = Duration::from_secs(1u64 << exponent).min(policy.max_delay);
        let next_allowed = last + delay;
        (next_allowed > now).then(|| Error::LoginThrottled {
            retry_after: until(now, next_allowed),
        })
    }

    /// How long failed logins count: long enough to cover a lockout and the
    /// longest wait, the same for real accounts and non-accounts.
    pub(super) fn decay_window(&self) -> Duration {
        let policy = &self.deps.policy;
        policy.lockout_duration + policy.max_delay + Duration::from_secs(60)
    }

    /// The failure state of an address that is not an account (times are stored
    /// as values and compared with the injected clock, like the user row's).
    async fn phantom_failures(&self, phantom: &PhantomAccount) -> Result<LoginFailures> {
        let counters = &self.deps.counters;
        let count = counters.count(&phantom.failures).await?;
        let at = |millis: u64| from_millis(i64::try_from(millis).unwrap_or(i64::MAX));
        Ok(LoginFailures {
            count: i32::try_from(count).unwrap_or(i32::MAX),
            last_failed_at: counters.get(&phantom.last_failure).await?.map(at),
            locked_until: counters.get(&phantom.lock).await?.map(at),
        })
    }

    /// Records a failure of an address that is not an account, as the user row would.
    async fn note_phantom_failure(
        &self,
        phantom: &PhantomAccount,
        now: OffsetDateTime,
    ) -> Result<Option<Error>> {
        let policy = &self.deps.policy;
        let counters = &self.deps.counters;
        let millis = |at: OffsetDateTime| u64::try_from(to_millis(at)).unwrap_or(0);
        let keep = self.decay_window();
        // Counted since the last failure, like the user row: a stale count starts afresh.
        let state = self.phantom_failures(phantom).await?;
        let fresh = state.last_failed_at.is_some_and(|at| at + keep >= now);
        let count = if fresh {
            u64::try_from(state.count).unwrap_or(0) + 1
        } else {
            1
        };
        counters.put(&phantom.failures, count, keep).await?;
        counters
            .put(&phantom.last_failure, millis(now), keep)
            .await?;
        if count >= u64::try_from(policy.lockout_after_failures).unwrap_or(u64::MAX) {
            let lock_until = now + policy.lockout_duration;
            counters
                .put(&phantom.lock, millis(lock_until), keep)
                .await?;
            counters.clear(&phantom.failures).await?;
            return Ok(Some(Error::AccountLocked {
                retry_after: until(now, lock_until),
            }));
        }
        Ok(None)
    }

    pub(crate) async fn note_ip_failure(&self, ip_key: Option<&CacheKey>) {
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

    /// Refuses an address with too many recent failures.
    pub(crate) async fn check_ip(&self, ip_key: Option<&CacheKey>) -> Result<()> {
        let Some(key) = ip_key else { return Ok(()) };
        let policy = &self.deps.policy;
        match self.deps.counters.count(key).await {
            Ok(count) if count >= policy.ip_max_failures => {
                let left = self
                    .deps
                    .counters
                    .remaining(key)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(policy.ip_window);
                Err(Error::LoginThrottled {
                    retry_after: left.max(Duration::from_secs(1)),
                })
            }
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "login throttle unavailable; continuing without the per-address limit");
                Ok(())
            }
        }
    }

    /// Throttling for a non-account: the same answers a real account would get.
    async fn refuse_phantom(
        &self,
        phantom: &PhantomAccount,
        password: &Password,
        ip_key: Option<&CacheKey>,
    ) -> Error {
        let now = self.deps.clock.now();
        let state = match self.phantom_failures(phantom).await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(%error, "login throttle unavailable for an unknown account");
                LoginFailures::default()
            }
        };
        if let Some(wait) = self.wait_before_next_attempt(&state, now) {
            return wait;
        }
        // Spend the time a real password check takes.
        if let Err(error) = self.deps.hasher.verify(password, None).await {
            return error;
        }
        self.note_ip_failure(ip_key).await;
        match self.note_phantom_failure(phantom, now).await {
            Ok(Some(locked)) => locked,
            Ok(None) => bad_credentials(),
            Err(error) => {
                tracing::warn!(%error, "could not count a failed login for an unknown account");
                bad_credentials()
            }
        }
    }

    /// Counts a failed sign-in step (wrong password or wrong code) against the
    /// account and the address, records `action` and commits `tx`. Returns the
    /// lockout, if this failure caused one.
    pub(super) async fn refuse_failed_attempt(
        &self,
        mut tx: Box<dyn TenantTx>,
        action: &'static str,
        user: UserId,
        ip_key: Option<&CacheKey>,
        now: OffsetDateTime,
    ) -> Result<Option<Error>> {
        let policy = &self.deps.policy;
        let tenant_id = tx.tenant_id();
        let lock_until = now + policy.lockout_duration;
        let failures = tx
            .users()
            .record_login_failure(
                user,
                now,
                policy.lockout_after_failures,
                lock_until,
                now - self.decay_window(),
            )
            .await?;
        self.record_refusal_as(&mut *tx, action, Some(user), Outcome::Failure)
            .await?;
        tx.commit().await?;
        self.note_ip_failure(ip_key).await;
        if failures.locked_until.is_some_and(|at| at > now) {
            tracing::warn!(tenant_id = %tenant_id, user_id = %user, "account locked after repeated failed sign-in attempts");
            return Ok(Some(Error::AccountLocked {
                retry_after: until(now, lock_until),
            }));
        }
        Ok(None)
    }

    /// Checks email and password and opens a session, or asks for a second factor.
    pub async fn login(&self, request: LoginRequest, client: &ClientInfo) -> Result<LoginOutcome> {
        let ip_key = ip_key(client);
        self.check_ip(ip_key.as_ref()).await?;
        // Malformed tenant or email cannot be an account: answer like a wrong password.
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
            let phantom = PhantomAccount::new(None, &slug, &email);
            return Err(self
                .refuse_phantom(&phantom, &request.password, ip_key.as_ref())
                .await);
        };

        let now = self.deps.clock.now();
        let mut tx = self
            .deps
            .store
            .tenant(TenantScope::system(tenant.id, SystemReason::Login))
            .await?;
        let Some(user) = tx.users().user_by_email(&email).await? else {
            // Recorded without the address typed (it may be a password).
            self.record_refusal(&mut *tx, None, Outcome::Failure)
                .await?;
            tx.commit().await?;
            let phantom = PhantomAccount::new(Some(tenant.id), &slug, &email);
            return Err(self
                .refuse_phantom(&phantom, &request.password, ip_key.as_ref())
                .await);
        };
        if let Some(wait) = self.wait_before_next_attempt(&user.login_failures, now) {
            self.record_refusal(&mut *tx, Some(user.id), Outcome::Denied)
                .await?;
            tx.commit().await?;
            return Err(wait);
        }
        if !self
            .deps
            .hasher
            .verify(&request.password, user.password_hash.as_ref())
            .await?
        {
            return Err(self
                .refuse_failed_attempt(tx, "auth.login.failed", user.id, ip_key.as_ref(), now)
                .await?
                .unwrap_or_else(bad_credentials));
        }
        // The password is right: now it is safe to say why access is refused.
        tenant.ensure_usable()?;
        if user.status == UserStatus::Disabled {
            self.record_refusal(&mut *tx, Some(user.id), Outcome::Denied)
                .await?;
            tx.commit().await?;
            return Err(Error::UserDisabled);
        }
        // Single sign-on required: only owners keep password logins (the way
        // back in should the identity provider fail).
        let owner = BuiltinRole::Owner.name();
        if tenant.settings.sso_required && !user.roles.iter().any(|r| r.as_str() == owner) {
            self.record_refusal(&mut *tx, Some(user.id), Outcome::Denied)
                .await?;
            tx.commit().await?;
            return Err(Error::SsoRequired);
        }
        // With a second factor (or one the tenant requires), the password only
        // earns a challenge; failures keep counting until the second step succeeds.
        if let Some(purpose) = self.second_step(&mut *tx, &tenant, &user).await? {
            let challenge = self
                .issue_challenge(&mut *tx, tenant.id, user.id, purpose, now)
                .await?;
            tx.commit().await?;
            return Ok(LoginOutcome::SecondFactor(challenge));
        }
        let pair = self
            .open_session(&mut *tx, tenant.id, user.id, client, now, "password")
            .await?;
        tx.commit().await?;
        Ok(LoginOutcome::Tokens(pair))
    }

    /// Opens a session for a user who has proven who they are: clears the
    /// failure count, mints the tokens and records the login, inside `tx`.
    pub(crate) async fn open_session(
        &self,
        tx: &mut dyn TenantTx,
        tenant: TenantId,
        user: UserId,
        client: &ClientInfo,
        now: OffsetDateTime,
        method: &'static str,
    ) -> Result<TokenPair> {
        tx.users().record_login_success(user, now).await?;
        let session = SessionRecord {
            id: SessionId::generate(),
            tenant_id: tenant,
            user_id: user,
            created_at: now,
            expires_at: now + self.deps.policy.session_ttl,
            revoked_at: None,
            ip: client.ip.clone(),
            user_agent: client
                .user_agent
                .as_deref()
                .map(|ua| ua.chars().take(300).collect()),
        };
        tx.sessions().insert_session(&session).await?;
        let pair = self.issue_tokens(tx, tenant, user, &session, now).await?;
        let record = Record::new("auth.login")
            .target("session", session.id)
            .after(&serde_json::json!({ "method": method }));
        self.deps.audit(tx, Actor::User(user), record).await?;
        tracing::info!(tenant_id = %tenant, user_id = %user, session_id = %session.id, method, "login succeeded");
        Ok(pair)
    }
}
