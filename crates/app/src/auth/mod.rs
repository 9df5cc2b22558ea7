//! Authentication: password login with throttling and lockout, sessions with
//! rotating refresh tokens, access tokens, API keys, operator keys and
//! single-use password tokens.

mod login;
mod mfa;
mod mfa_login;
mod password_tokens;
mod sessions;
mod totp;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use karen_domain::credentials::{RefreshTokenRecord, SessionRecord};
use karen_domain::ports::{AccessClaims, TenantTx};
use karen_domain::{ApiKeyId, RefreshTokenId, Result, SessionId, TenantId, UserId};
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::Deps;
use crate::cache::{EpochCache, Topic};
use crate::credentials::{self, Kind};

pub use login::LoginRequest;
pub use mfa::{MfaOverview, TotpEnrollment};
pub use mfa_login::{MfaChallenge, SecondFactor};
pub use password_tokens::PasswordSetup;
pub(crate) use password_tokens::{check_new_password, issue_password_token};
pub use verify::KeyGrant;

/// API keys remembered between calls (about 200 bytes each).
const API_KEY_CACHE_CAPACITY: usize = 100_000;
/// The longest a remembered key goes without a fresh read: the bound on
/// staleness should an invalidation be lost.
const API_KEY_CACHE_TTL: Duration = Duration::from_secs(30);
pub(crate) use login::ip_key;
pub use sessions::MAX_LISTED_SESSIONS;
pub(crate) use sessions::{end_all_sessions, verify_current_password};

/// Where a request came from (for throttling and the session list).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What a successful login or refresh returns.
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: SecretString,
    pub expires_in_secs: u64,
    pub session_id: SessionId,
}

/// What a password login earns.
pub enum LoginOutcome {
    /// A session (the user has no second factor and needs none).
    Tokens(TokenPair),
    /// A challenge to finish with a second factor (or to enroll one first).
    SecondFactor(MfaChallenge),
}

/// The authentication service.
#[derive(Clone)]
pub struct AuthService {
    deps: Arc<Deps>,
    /// API keys with their owner's standing, checked on every gateway call.
    api_keys: Arc<EpochCache<ApiKeyId, verify::KeyGrant>>,
}

impl AuthService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        let caching = deps.caching;
        Self {
            deps,
            api_keys: Arc::new(
                EpochCache::new(
                    "api_keys",
                    Topic::Access,
                    API_KEY_CACHE_CAPACITY,
                    API_KEY_CACHE_TTL,
                )
                .switched(caching),
            ),
        }
    }

    /// The API-key cache (for its hit ratio).
    pub fn api_key_cache(&self) -> &EpochCache<ApiKeyId, verify::KeyGrant> {
        &self.api_keys
    }

    /// Mints a refresh token for `session` and an access token, inside `tx`.
    async fn issue_tokens(
        &self,
        tx: &mut dyn TenantTx,
        tenant: TenantId,
        user: UserId,
        session: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<TokenPair> {
        let token_id = RefreshTokenId::generate();
        let minted = credentials::mint(Kind::Refresh, &[tenant.as_uuid(), token_id.as_uuid()])?;
        tx.sessions()
            .insert_refresh_token(&RefreshTokenRecord {
                id: token_id,
                tenant_id: tenant,
                session_id: session.id,
                user_id: user,
                secret_hash: minted.hash,
                expires_at: session.expires_at,
                used_at: None,
                created_at: now,
            })
            .await?;
        let ttl = self.deps.policy.access_token_ttl;
        let access_token = self
            .deps
            .tokens
            .issue(&AccessClaims {
                tenant_id: tenant,
                user_id: user,
                session_id: session.id,
                issued_at: now,
                expires_at: now + ttl,
            })
            .await?;
        Ok(TokenPair {
            access_token,
            refresh_token: minted.text,
            expires_in_secs: ttl.as_secs(),
            session_id: session.id,
        })
    }
}
