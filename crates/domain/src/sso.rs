//! Single sign-on: a tenant's connections to identity providers (OIDC and
//! SAML 2.0), the claim-to-role mapping, the pending logins and the
//! external identities linked to users. Protocol verification lives in the
//! adapters; everything after "the provider vouches for this subject" is
//! shared by every kind of connection.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::credentials::SecretHash;
use crate::permission::BuiltinRole;
use crate::values::{RoleName, printable};
use crate::{Error, SsoConnectionId, SsoStateId, TenantId, UserId};

/// The protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SsoKind {
    /// OpenID Connect (authorization code flow with PKCE).
    Oidc,
    /// SAML 2.0 (SP-initiated, HTTP-Redirect or HTTP-POST binding; the
    /// response comes back by HTTP-POST).
    Saml,
}

impl SsoKind {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SsoKind::Oidc => "oidc",
            SsoKind::Saml => "saml",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "oidc" => Ok(SsoKind::Oidc),
            "saml" => Ok(SsoKind::Saml),
            other => Err(Error::internal(format!(
                "unknown SSO connection kind '{other}' in store"
            ))),
        }
    }
}

/// The most entries a role mapping may have.
pub const MAX_MAPPED_VALUES: usize = 100;

/// How a provider's claim becomes Karen roles: each value of `claim` (a
/// string or a list of strings, e.g. `groups`) that is a key of `values`
/// grants that role. When nothing maps, `default_role` is given, or the login
/// is refused if it is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// The claim (attribute) holding group names or roles.
    pub claim: String,
    /// Claim value → role name.
    #[serde(default)]
    pub values: BTreeMap<String, RoleName>,
    /// The role when no value maps; `None` refuses such logins.
    pub default_role: Option<RoleName>,
}

impl RoleMapping {
    /// Checks the mapping's own rules (roles' existence is the service's job).
    /// The owner role is never granted through single sign-on: owners are
    /// managed in Karen, so a compromised provider cannot mint owners.
    pub fn validate(&self) -> Result<(), Error> {
        let claim = self.claim.trim();
        if claim.is_empty() || claim.len() > 100 || claim.chars().any(char::is_control) {
            return Err(Error::invalid(
                Some("role_mapping.claim"),
                "the claim name must be 1-100 printable characters (e.g. \"groups\")",
            ));
        }
        if self.values.len() > MAX_MAPPED_VALUES {
            return Err(Error::invalid(
                Some("role_mapping.values"),
                format!("at most {MAX_MAPPED_VALUES} claim values may be mapped"),
            ));
        }
        for value in self.values.keys() {
            if value.is_empty() || value.len() > 256 {
                return Err(Error::invalid(
                    Some("role_mapping.values"),
                    "each claim value must be 1-256 characters",
                ));
            }
        }
        let owner = BuiltinRole::Owner.name();
        if self.roles().any(|role| role.as_str() == owner) {
            return Err(Error::invalid(
                Some("role_mapping"),
                "the owner role cannot be granted through single sign-on; make owners in Karen",
            ));
        }
        Ok(())
    }

    /// Every role the mapping may grant.
    pub fn roles(&self) -> impl Iterator<Item = &RoleName> {
        self.values.values().chain(self.default_role.iter())
    }

    /// The roles `claims` earn (sorted, without duplicates); empty when
    /// nothing maps and there is no default.
    pub fn map(&self, claims: &serde_json::Map<String, Value>) -> Vec<RoleName> {
        let presented: Vec<&str> = match claims.get(&self.claim) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut roles: Vec<RoleName> = presented
            .iter()
            .filter_map(|value| self.values.get(*value).cloned())
            .collect();
        roles.sort();
        roles.dedup();
        if roles.is_empty()
            && let Some(default) = &self.default_role
        {
            roles.push(default.clone());
        }
        roles
    }
}

/// The OpenID Connect settings of a connection (stored as its `config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer URL; discovery is read from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// Scopes asked for; `openid` is always added.
    pub scopes: Vec<String>,
}

impl OidcSettings {
    /// Checks lengths and shapes (the issuer's reachability is the adapter's job).
    pub fn validate(&self) -> Result<(), Error> {
        if self.issuer.trim().is_empty() || self.issuer.len() > 2048 {
            return Err(Error::invalid(
                Some("issuer"),
                "the issuer must be a URL of at most 2048 characters",
            ));
        }
        if self.client_id.trim().is_empty()
            || self.client_id.len() > 256
            || self.client_id.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                Some("client_id"),
                "the client id must be 1-256 printable characters",
            ));
        }
        if self.scopes.len() > 20 {
            return Err(Error::invalid(Some("scopes"), "at most 20 scopes"));
        }
        for scope in &self.scopes {
            let ok = !scope.is_empty()
                && scope.len() <= 100
                && scope
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
            if !ok {
                return Err(Error::invalid(
                    Some("scopes"),
                    format!(
                        "'{}' is not a scope (1-100 printable ASCII characters, no spaces)",
                        printable(scope, 40)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The scopes to request: `openid` first, then the configured ones.
    pub fn requested_scopes(&self) -> Vec<String> {
        let mut scopes = vec!["openid".to_owned()];
        for scope in &self.scopes {
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        scopes
    }
}

/// A tenant's connection to an identity provider.
#[derive(Clone)]
pub struct SsoConnection {
    pub id: SsoConnectionId,
    pub tenant_id: TenantId,
    pub kind: SsoKind,
    /// The protocol's settings (for OIDC an [`OidcSettings`]).
    pub config: Value,
    /// The client secret (sealed in the store); never shown again.
    pub client_secret: Option<SecretString>,
    pub role_mapping: RoleMapping,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl fmt::Debug for SsoConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsoConnection")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("kind", &self.kind)
            .field("config", &self.config)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("role_mapping", &self.role_mapping)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A login sent to the provider and not yet back: the digest of the `state`
/// handed out, the digest of the `nonce` the ID token must carry, and the PKCE
/// verifier (sealed: it is sent to the provider at the end). Usable once.
#[derive(Clone)]
pub struct SsoLoginState {
    pub id: SsoStateId,
    pub tenant_id: TenantId,
    pub connection_id: SsoConnectionId,
    pub state_hash: SecretHash,
    pub nonce_hash: SecretHash,
    pub pkce_verifier: SecretString,
    /// The callback URL sent to the provider (the code exchange repeats it).
    pub redirect_uri: String,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for SsoLoginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsoLoginState")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("connection_id", &self.connection_id)
            .field("expires_at", &self.expires_at)
            .field("used_at", &self.used_at)
            .finish_non_exhaustive()
    }
}

/// A user's identity at a provider: the provider's subject, linked to a user.
#[derive(Debug, Clone)]
pub struct SsoIdentity {
    pub tenant_id: TenantId,
    pub connection_id: SsoConnectionId,
    pub subject: String,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub last_login_at: OffsetDateTime,
}

/// What a provider vouched for, once its protocol's checks passed (ID token
/// signature, issuer, audience, expiry and nonce for OIDC; the signed
/// assertion for SAML). The shared login logic starts from here.
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    pub connection_id: SsoConnectionId,
    /// The provider's stable identifier of the person (`sub`, `NameID`).
    pub subject: String,
    pub email: Option<String>,
    /// `false` when the provider says the email is not verified.
    pub email_verified: bool,
    pub name: Option<String>,
    /// Every claim (attribute), for the role mapping.
    pub claims: serde_json::Map<String, Value>,
}

/// Why a single sign-on login was refused. The reason is recorded in the
/// audit trail (`auth.sso.login.failed`) and named in the problem detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoFailure {
    /// The `state` is unknown, malformed, expired or already used.
    State,
    /// The provider answered the authorization request with an error.
    ProviderError,
    /// The code exchange at the token endpoint failed (bad code, PKCE mismatch,
    /// wrong client secret).
    CodeExchange,
    /// The ID token is not signed by a key of the provider.
    Signature,
    /// The ID token's algorithm is not allowed (`none`, HMAC, or unknown).
    Algorithm,
    /// `iss` is not the configured issuer.
    Issuer,
    /// `aud` (or `azp`) is not this client.
    Audience,
    /// The ID token has expired (or is issued in the future).
    Expired,
    /// `nonce` is missing or not the one of this login.
    Nonce,
    /// A required claim is missing or malformed.
    Claims,
    /// The email is missing or unverified (needed for a new account).
    Email,
    /// The email belongs to an account not linked to this identity.
    EmailInUse,
    /// The email's domain is not accepted by the organisation.
    EmailDomain,
    /// No role maps and the mapping has no default.
    NoRole,
    /// SAML: no signature covers the assertion.
    Unsigned,
    /// SAML: the assertion was accepted before (replay cache).
    Replay,
    /// SAML: the Destination or the bearer Recipient is not this service
    /// provider's assertion consumer URL.
    Destination,
    /// SAML: InResponseTo is not the request of this login.
    InResponseTo,
    /// SAML: the response is malformed or shaped to mislead a verifier
    /// (several assertions, duplicate IDs, a DTD, an encrypted assertion…).
    Malformed,
}

impl SsoFailure {
    /// The stable name of the reason.
    pub const fn as_str(self) -> &'static str {
        match self {
            SsoFailure::State => "state",
            SsoFailure::ProviderError => "provider_error",
            SsoFailure::CodeExchange => "code_exchange",
            SsoFailure::Signature => "signature",
            SsoFailure::Algorithm => "algorithm",
            SsoFailure::Issuer => "issuer",
            SsoFailure::Audience => "audience",
            SsoFailure::Expired => "expired",
            SsoFailure::Nonce => "nonce",
            SsoFailure::Claims => "claims",
            SsoFailure::Email => "email",
            SsoFailure::EmailInUse => "email_in_use",
            SsoFailure::EmailDomain => "email_domain",
            SsoFailure::NoRole => "no_role",
            SsoFailure::Unsigned => "unsigned",
            SsoFailure::Replay => "replay",
            SsoFailure::Destination => "destination",
            SsoFailure::InResponseTo => "in_response_to",
            SsoFailure::Malformed => "malformed",
        }
    }

    /// What a person can do about it.
    pub const fn describe(self) -> &'static str {
        match self {
            SsoFailure::State => {
                "the sign-in request is unknown, expired or already used; start again at GET /v1/auth/sso/oidc/start (or /v1/auth/sso/saml/start)"
            }
            SsoFailure::Replay => "this identity provider answer was already used; start again",
            SsoFailure::ProviderError => "the identity provider refused the sign-in",
            SsoFailure::CodeExchange => {
                "the identity provider did not accept the authorization code; start again"
            }
            SsoFailure::Signature
            | SsoFailure::Algorithm
            | SsoFailure::Issuer
            | SsoFailure::Audience
            | SsoFailure::Expired
            | SsoFailure::Nonce
            | SsoFailure::Claims
            | SsoFailure::Unsigned
            | SsoFailure::Destination
            | SsoFailure::InResponseTo
            | SsoFailure::Malformed => {
                "the identity provider's answer did not verify; start again, or ask an administrator to check the SSO connection"
            }
            SsoFailure::Email => {
                "the identity provider did not give a verified email address for this account"
            }
            SsoFailure::EmailInUse => {
                "an account with this email exists and is not linked to this identity; ask an administrator"
            }
            SsoFailure::EmailDomain => "this organisation does not accept this email domain",
            SsoFailure::NoRole => {
                "your groups at the identity provider give no role in this organisation; ask an administrator"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(default: Option<&str>) -> RoleMapping {
        RoleMapping {
            claim: "groups".into(),
            values: [
                ("eng".to_owned(), RoleName::parse("member").unwrap()),
                ("admins".to_owned(), RoleName::parse("admin").unwrap()),
            ]
            .into_iter()
            .collect(),
            default_role: default.map(|r| RoleName::parse(r).unwrap()),
        }
    }

    #[test]
    fn claims_map_to_roles_with_a_default_or_none() {
        let claims = |v: Value| {
            serde_json::json!({ "groups": v })
                .as_object()
                .unwrap()
                .clone()
        };
        let m = mapping(Some("viewer"));
        let names =
            |roles: Vec<RoleName>| roles.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            names(m.map(&claims(serde_json::json!(["eng", "admins", "x"])))),
            ["admin", "member"]
        );
        assert_eq!(names(m.map(&claims(serde_json::json!("eng")))), ["member"]);
        assert_eq!(names(m.map(&claims(serde_json::json!(["x"])))), ["viewer"]);
        assert!(mapping(None).map(&claims(serde_json::json!(42))).is_empty());
        assert!(m.validate().is_ok());
        let mut owner = mapping(None);
        owner
            .values
            .insert("root".into(), RoleName::parse("owner").unwrap());
        assert!(owner.validate().is_err());
    }

    #[test]
    fn openid_is_always_requested() {
        let settings = OidcSettings {
            issuer: "https://idp.example.com".into(),
            client_id: "karen".into(),
            scopes: vec!["email".into(), "openid".into(), "groups".into()],
        };
        assert_eq!(settings.requested_scopes(), ["openid", "email", "groups"]);
        assert!(settings.validate().is_ok());
        let bad = OidcSettings {
            scopes: vec!["a b".into()],
            ..settings
        };
        assert!(bad.validate().is_err());
    }
}
