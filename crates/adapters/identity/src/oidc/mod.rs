//! The OpenID Connect relying party: discovery and JWKS (cached; keys
//! refetched when a token names an unknown `kid`, at most once a minute),
//! the authorization URL, and the code exchange with ID token verification.
//!
//! Built on `jsonwebtoken` (already the workspace's JWT library, on aws-lc-rs)
//! and the workspace `reqwest`, rather than the `openidconnect` crate: that
//! crate would bring a second crypto stack (RustCrypto RSA/ECDSA) and its own
//! reqwest 0.12 integration, and the protocol surface needed here is small.
//! Every request goes through the outbound (SSRF) policy's client, which
//! resolves names through the policy and follows no redirects.

mod fetch;
mod id_token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use karen_domain::clock::Clock;
use karen_domain::ports::{AuthorizationRequest, CodeRedemption, LlmError, OidcClient, OidcError};
use karen_domain::sso::{ExternalIdentity, SsoFailure};
use karen_llm::{Endpoint, OutboundPolicy, Timeouts, classify, http_client};
use serde::Deserialize;
use time::OffsetDateTime;
use url::{Host, Url};

use self::id_token::KeySet;

/// How long a discovery document is used before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// How long a key set is used before it is read again.
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// The shortest time between two reads of a key set forced by an unknown `kid`
/// (so forged `kid`s cannot make Karen hammer the provider).
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(60);
/// Providers remembered at most (one per configured issuer in practice).
const CACHE_CAPACITY: usize = 10_000;

/// The fields of a discovery document Karen uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

struct Cached<T> {
    value: Arc<T>,
    fetched_at: OffsetDateTime,
}

#[derive(Default)]
struct ProviderCache {
    discovery: Option<Cached<Discovery>>,
    keys: Option<Cached<KeySet>>,
}

/// The OpenID Connect client Karen's services use through [`OidcClient`].
pub struct OidcHttpClient {
    http: reqwest::Client,
    policy: OutboundPolicy,
    request_timeout: Duration,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<String, ProviderCache>>,
}

fn refused(error: LlmError) -> OidcError {
    match error {
        LlmError::Refused(message) => OidcError::Refused(message),
        other => OidcError::Refused(other.to_string()),
    }
}

impl OidcHttpClient {
    /// A client whose requests follow `policy` (identity providers on private
    /// addresses need an allowlist entry, like model providers).
    pub fn new(
        policy: OutboundPolicy,
        timeouts: &Timeouts,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OidcError> {
        let http = http_client(&policy, timeouts).map_err(refused)?;
        Ok(Self {
            http,
            policy,
            request_timeout: timeouts.request.min(Duration::from_secs(15)),
            clock,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Parses `raw` as a URL Karen may fetch: the SSRF policy's checks, and
    /// plain `http` only to an allowlisted loopback or private address (a
    /// test or lab provider), never across the internet.
    fn endpoint(&self, raw: &str, what: &str) -> Result<Endpoint, OidcError> {
        let endpoint = Endpoint::parse(raw, &self.policy).map_err(|error| match error {
            LlmError::Refused(message) => OidcError::Refused(format!(
                "{what}: {}",
                message.replace("provider URL", "URL")
            )),
            other => OidcError::Refused(format!("{what}: {other}")),
        })?;
        let url = endpoint.url();
        if url.scheme() == "http" {
            let ip = match url.host() {
                Some(Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                Some(Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            };
            let private_and_allowed = ip.is_some_and(|ip| {
                !classify(ip).is_public() && self.policy.allows_address(None, ip).unwrap_or(false)
            });
            if !private_and_allowed {
                return Err(OidcError::Refused(format!(
                    "{what}: use https (plain http is accepted only for an allowlisted private address)"
                )));
            }
        }
        Ok(endpoint)
    }

    fn fresh<T>(cached: Option<&Cached<T>>, ttl: Duration, now: OffsetDateTime) -> Option<Arc<T>> {
        cached
            .filter(|c| c.fetched_at + ttl > now)
            .map(|c| c.value.clone())
    }

    fn with_cache<R>(&self, issuer: &str, f: impl FnOnce(&mut ProviderCache) -> R) -> R {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(issuer) {
            cache.clear();
        }
        f(cache.entry(issuer.to_owned()).or_default())
    }

    /// The provider's discovery document (cached; `reread` skips the cache).
    pub(crate) async fn discovery(
        &self,
        issuer: &str,
        reread: bool,
    ) -> Result<Arc<Discovery>, OidcError> {
        let now = self.clock.now();
        let cached = self.with_cache(issuer, |c| {
            Self::fresh(c.discovery.as_ref(), DISCOVERY_TTL, now)
        });
        if let Some(hit) = cached.filter(|_| !reread) {
            return Ok(hit);
        }
        let base = self.endpoint(issuer, "the issuer")?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            base.url().as_str().trim_end_matches('/')
        );
        let url = self.endpoint(&url, "the discovery document")?;
        let document: Discovery =
            fetch::get_json(self, url.url(), "the discovery document").await?;
        if document.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(OidcError::Provider(format!(
                "the discovery document names the issuer '{}', not the configured '{issuer}'",
                karen_domain::values::printable(&document.issuer, 200)
            )));
        }
        for (raw, what) in [
            (
                &document.authorization_endpoint,
                "the authorization endpoint",
            ),
            (&document.token_endpoint, "the token endpoint"),
            (&document.jwks_uri, "the key set (jwks_uri)"),
        ] {
            self.endpoint(raw, what)?;
        }
        let document = Arc::new(document);
        self.with_cache(issuer, |c| {
            c.discovery = Some(Cached {
                value: document.clone(),
                fetched_at: now,
            });
        });
        Ok(document)
    }

    /// The provider's keys: cached, or read again when `force` (an unknown
    /// `kid`) and the last read is old enough.
    pub(crate) async fn keys(
        &self,
        issuer: &str,
        discovery: &Discovery,
        force: bool,
    ) -> Result<Arc<KeySet>, OidcError> {
        let now = self.clock.now();
        let cached = self.with_cache(issuer, |c| {
            c.keys.as_ref().map(|k| (k.value.clone(), k.fetched_at))
        });
        if let Some((keys, fetched_at)) = cached {
            let ttl = if force { JWKS_MIN_REFRESH } else { JWKS_TTL };
            if fetched_at + ttl > now {
                return Ok(keys);
            }
        }
        let url = self.endpoint(&discovery.jwks_uri, "the key set (jwks_uri)")?;
        let raw: serde_json::Value = fetch::get_json(self, url.url(), "the key set").await?;
        let keys = Arc::new(KeySet::parse(&raw)?);
        self.with_cache(issuer, |c| {
            c.keys = Some(Cached {
                value: keys.clone(),
                fetched_at: now,
            });
        });
        Ok(keys)
    }
}

#[async_trait]
impl OidcClient for OidcHttpClient {
    async fn check_issuer(&self, issuer: &str) -> Result<(), OidcError> {
        // A configuration is checked against what the provider serves now.
        self.discovery(issuer, true).await.map(drop)
    }

    async fn authorization_url(
        &self,
        request: &AuthorizationRequest<'_>,
    ) -> Result<String, OidcError> {
        let discovery = self.discovery(request.issuer, false).await?;
        let mut url = Url::parse(&discovery.authorization_endpoint)
            .map_err(|_| OidcError::Provider("the authorization endpoint is not a URL".into()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", request.client_id)
            .append_pair("redirect_uri", request.redirect_uri)
            .append_pair("scope", &request.scopes.join(" "))
            .append_pair("state", request.state)
            .append_pair("nonce", request.nonce)
            .append_pair("code_challenge", request.code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    async fn redeem(&self, redemption: &CodeRedemption<'_>) -> Result<ExternalIdentity, OidcError> {
        let discovery = self.discovery(redemption.issuer, false).await?;
        let token = fetch::exchange_code(self, &discovery, redemption).await?;
        let identity = id_token::verify(self, &discovery, redemption, &token).await;
        if let Err(OidcError::Rejected(reason)) = &identity {
            tracing::info!(reason = reason.as_str(), "id token refused");
        }
        identity
    }
}

/// A rejection for `reason`.
pub(crate) fn rejected(reason: SsoFailure) -> OidcError {
    OidcError::Rejected(reason)
}
