//! `[sso]`: single sign-on. Which private addresses identity providers may
//! use (none by default: a tenant administrator must not reach the
//! operator's internal network through an issuer URL) and Karen's public URL,
//! from which the OIDC redirect URI is made.

use std::sync::Arc;

use karen_app::sso::SsoPorts;
use karen_domain::clock::Clock;
use karen_identity::oidc::OidcHttpClient;
use karen_llm::{OutboundPolicy, Timeouts};
use serde::{Deserialize, Serialize};

/// `[sso]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsoConfig {
    /// Karen's public base URL, e.g. `https://karen.example.com`; the OIDC
    /// redirect URI is `<public_url>/v1/auth/sso/oidc/callback`. Unset: only
    /// requests addressed to a loopback host can start a login (development).
    pub public_url: Option<String>,
    /// Private, loopback or link-local identity providers allowed anyway
    /// (`host:port`, `host`, or a CIDR such as `10.0.0.0/8`).
    pub allow_private_addresses: Vec<String>,
    /// Minutes a user has to come back from the provider (1-60).
    pub login_ttl_minutes: u64,
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            allow_private_addresses: Vec::new(),
            login_ttl_minutes: 10,
        }
    }
}

impl SsoConfig {
    /// Configuration mistakes, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(url) = &self.public_url {
            let ok = url::Url::parse(url).is_ok_and(|u| {
                (u.scheme() == "https" || u.scheme() == "http")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.username().is_empty()
            });
            if !ok {
                problems.push(
                    "sso.public_url: must be an http(s) URL without credentials or query, e.g. https://karen.example.com".into(),
                );
            }
        }
        if let Err(error) =
            OutboundPolicy::new(self.allow_private_addresses.iter().cloned()).validate()
        {
            problems.push(format!("sso.allow_private_addresses: {error}"));
        }
        if !(1..=60).contains(&self.login_ttl_minutes) {
            problems.push("sso.login_ttl_minutes: 1 to 60".into());
        }
        problems
    }

    /// The ports of the SSO service (`enabled`: `features.sso`).
    pub fn ports(&self, enabled: bool, clock: Arc<dyn Clock>) -> anyhow::Result<SsoPorts> {
        let mut ports = SsoPorts {
            public_url: self.public_url.clone(),
            login_ttl: std::time::Duration::from_secs(self.login_ttl_minutes * 60),
            ..SsoPorts::default()
        };
        if enabled {
            let policy = OutboundPolicy::new(self.allow_private_addresses.iter().cloned());
            let timeouts = Timeouts {
                request: std::time::Duration::from_secs(15),
                ..Timeouts::default()
            };
            let client = OidcHttpClient::new(policy, &timeouts, clock)
                .map_err(|e| anyhow::anyhow!("sso: {e}"))?;
            ports.oidc = Some(Arc::new(client));
            ports.saml = Some(Arc::new(karen_identity::saml::SamlCore));
        }
        Ok(ports)
    }
}
