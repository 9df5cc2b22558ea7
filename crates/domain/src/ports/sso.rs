//! Single sign-on: the store of connections, pending logins and linked
//! identities, and the OpenID Connect client (discovery, JWKS, code
//! exchange, ID token verification) that an adapter implements.

use async_trait::async_trait;
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::sso::{
    ExternalIdentity, SsoConnection, SsoFailure, SsoIdentity, SsoKind, SsoLoginState,
};
use crate::{Result, SsoConnectionId, SsoStateId, UserId};

/// Single sign-on rows of one tenant, reached through a tenant transaction.
#[async_trait]
pub trait SsoRepo: Send {
    /// The tenant's connection of `kind` (one per kind).
    async fn connection(&mut self, kind: SsoKind) -> Result<Option<SsoConnection>>;
    /// Inserts or replaces the tenant's connection of its kind (same id).
    async fn put_connection(&mut self, connection: &SsoConnection) -> Result<()>;
    /// Removes the connection of `kind` with its pending logins and linked
    /// identities (the users stay); `false` if there was none.
    async fn delete_connection(&mut self, kind: SsoKind) -> Result<bool>;
    async fn insert_state(&mut self, state: &SsoLoginState) -> Result<()>;
    async fn state(&mut self, id: SsoStateId) -> Result<Option<SsoLoginState>>;
    /// Marks the pending login used; `false` if it already was (a replay, or a race lost).
    async fn spend_state(&mut self, id: SsoStateId, at: OffsetDateTime) -> Result<bool>;
    /// Removes pending logins that expired before `before`.
    async fn purge_states(&mut self, before: OffsetDateTime) -> Result<u64>;
    /// The user linked to `subject` at `connection`.
    async fn identity(
        &mut self,
        connection: SsoConnectionId,
        subject: &str,
    ) -> Result<Option<SsoIdentity>>;
    async fn insert_identity(&mut self, identity: &SsoIdentity) -> Result<()>;
    async fn touch_identity(
        &mut self,
        connection: SsoConnectionId,
        subject: &str,
        at: OffsetDateTime,
    ) -> Result<()>;
    /// The identities linked to `user` (any connection).
    async fn identities_of(&mut self, user: UserId) -> Result<Vec<SsoIdentity>>;
    /// Records a SAML assertion as consumed until `expires_at` (first removing
    /// the tenant's entries expired at `now`); `false` if it was consumed
    /// before: a replay. A unique key decides, so two replicas racing with
    /// the same assertion cannot both succeed.
    async fn consume_assertion(
        &mut self,
        assertion_id: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool>;
}

/// Why an OIDC operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OidcError {
    /// The issuer or an endpoint is refused by the outbound (SSRF) policy, or
    /// is not a usable URL; the message says how to fix the configuration.
    #[error("{0}")]
    Refused(String),
    /// The provider could not be reached, answered with a redirect (never
    /// followed) or with something that is not a valid discovery document or
    /// key set.
    #[error("{0}")]
    Provider(String),
    /// The login did not verify (the reason is audited).
    #[error("{}", .0.as_str())]
    Rejected(SsoFailure),
}

/// What the authorization request to the provider carries.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    pub state: &'a str,
    pub nonce: &'a str,
    /// BASE64URL(SHA-256(verifier)), sent with `code_challenge_method=S256`.
    pub code_challenge: &'a str,
}

/// What the code exchange and the ID token check need.
pub struct CodeRedemption<'a> {
    pub connection_id: SsoConnectionId,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a SecretString,
    pub redirect_uri: &'a str,
    pub code: &'a str,
    pub code_verifier: &'a SecretString,
    /// Whether the ID token's `nonce` is this login's (the service keeps only
    /// its digest and compares in constant time).
    pub nonce_matches: &'a (dyn Fn(&str) -> bool + Send + Sync),
    /// Now, by the service's clock (for `exp` and `iat`).
    pub now: OffsetDateTime,
}

/// An OpenID Connect relying party: discovery and keys (cached), the
/// authorization URL, and the code exchange with full ID token verification
/// (signature by a key of the provider, allowed algorithm, `iss`, `aud`,
/// `azp`, `exp`, `iat`, `nonce`). All outbound requests follow the SSRF
/// policy and no redirects.
#[async_trait]
pub trait OidcClient: Send + Sync {
    /// Checks that an issuer URL is acceptable (scheme, SSRF policy) and that
    /// its discovery document can be read.
    async fn check_issuer(&self, issuer: &str) -> Result<(), OidcError>;
    /// The provider's authorization URL for this request.
    async fn authorization_url(
        &self,
        request: &AuthorizationRequest<'_>,
    ) -> Result<String, OidcError>;
    /// Exchanges the code and verifies the ID token.
    async fn redeem(&self, redemption: &CodeRedemption<'_>) -> Result<ExternalIdentity, OidcError>;
}
