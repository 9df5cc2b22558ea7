//! `[audit.forward]`: copies of every tenant's audit trail sent to an
//! external collector (a syslog server or an HTTPS webhook), and the
//! forwarder built from it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use karen_app::audit_forward::{AuditForwarder, ForwardPolicy};
use karen_domain::clock::Clock;
use karen_domain::ports::{AuditSink, Store};
use karen_forward::{EventFormat, SyslogOptions, SyslogSink, WebhookOptions, WebhookSink};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The variable holding the webhook's HMAC secret (instead of `secret_file`).
pub const WEBHOOK_SECRET_ENV: &str = "KAREN_AUDIT_WEBHOOK_SECRET";
/// The shortest HMAC secret accepted.
const MIN_SECRET_BYTES: usize = 32;

/// `[audit.forward]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditForwardConfig {
    /// Events per delivery.
    pub batch: u32,
    /// Seconds between rounds while the collectors accept.
    pub interval_secs: u64,
    /// The longest pause, in seconds, while a collector fails (pauses double).
    pub max_backoff_secs: u64,
    pub webhook: Option<WebhookConfig>,
    pub syslog: Option<SyslogConfig>,
}

impl Default for AuditForwardConfig {
    fn default() -> Self {
        Self {
            batch: 500,
            interval_secs: 5,
            max_backoff_secs: 300,
            webhook: None,
            syslog: None,
        }
    }
}

/// `[audit.forward.webhook]`: an HTTPS endpoint receiving signed batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…` (plain `http://` only to a loopback address, e.g. a sidecar).
    pub url: String,
    /// A file holding the HMAC secret (at least 32 bytes); else
    /// `KAREN_AUDIT_WEBHOOK_SECRET`.
    pub secret_file: Option<PathBuf>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

/// `[audit.forward.syslog]`: a syslog collector over TCP or TLS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` (6514 is the usual TLS port, 601 plain TCP).
    pub address: String,
    #[serde(default = "default_true")]
    pub tls: bool,
    /// PEM roots to trust; the system's when absent.
    pub ca_file: Option<PathBuf>,
    /// The HOSTNAME field (default: this machine's name).
    pub hostname: Option<String>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    10
}

fn default_true() -> bool {
    true
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl WebhookConfig {
    fn parsed_url(&self) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| {
            format!(
                "audit.forward.webhook.url: '{}' is not a URL ({e})",
                self.url
            )
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("audit.forward.webhook.url: put no credentials in the URL; the batches are signed with the secret".into());
        }
        match url.scheme() {
            "https" => Ok(url),
            "http" if is_loopback_host(&url) => Ok(url),
            _ => Err(format!(
                "audit.forward.webhook.url: must be https:// (http:// only to a loopback address), got '{}'",
                self.url
            )),
        }
    }

    fn secret(&self) -> anyhow::Result<SecretString> {
        let secret = match &self.secret_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "reading audit.forward.webhook.secret_file {}",
                        path.display()
                    )
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            None => std::env::var(WEBHOOK_SECRET_ENV).with_context(|| {
                format!("audit.forward.webhook: set secret_file or {WEBHOOK_SECRET_ENV}")
            })?,
        };
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "audit.forward.webhook: the secret must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        );
        Ok(SecretString::from(secret))
    }
}

impl AuditForwardConfig {
    /// Problems with the section, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=10_000).contains(&self.batch) {
            problems.push(format!(
                "audit.forward.batch: {} is out of range (1–10000)",
                self.batch
            ));
        }
        if !(1..=3600).contains(&self.interval_secs) {
            problems.push(format!(
                "audit.forward.interval_secs: {} is out of range (1–3600)",
                self.interval_secs
            ));
        }
        if self.max_backoff_secs < self.interval_secs || self.max_backoff_secs > 86_400 {
            problems.push("audit.forward.max_backoff_secs: between interval_secs and 86400".into());
        }
        if let Some(webhook) = &self.webhook {
            if let Err(problem) = webhook.parsed_url() {
                problems.push(problem);
            }
            if !(1..=300).contains(&webhook.timeout_secs) {
                problems.push("audit.forward.webhook.timeout_secs: between 1 and 300".into());
            }
        }
        if let Some(syslog) = &self.syslog {
            let port = syslog
                .address
                .rsplit_once(':')
                .map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(p)) if p > 0) {
                problems.push(format!(
                    "audit.forward.syslog.address: '{}' must be host:port",
                    syslog.address
                ));
            }
            if !(1..=300).contains(&syslog.timeout_secs) {
                problems.push("audit.forward.syslog.timeout_secs: between 1 and 300".into());
            }
            if syslog.ca_file.is_some() && !syslog.tls {
                problems.push("audit.forward.syslog.ca_file: only used with tls = true".into());
            }
        }
        problems
    }

    /// The forwarder, or `None` when no collector is configured.
    pub fn forwarder(
        &self,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Option<AuditForwarder>> {
        let format: EventFormat = Arc::new(karen_http::audit_event_json);
        let mut sinks: Vec<Arc<dyn AuditSink>> = Vec::new();
        if let Some(webhook) = &self.webhook {
            let options = WebhookOptions {
                url: webhook.parsed_url().map_err(anyhow::Error::msg)?,
                secret: webhook.secret()?,
                timeout: Duration::from_secs(webhook.timeout_secs),
            };
            sinks.push(Arc::new(WebhookSink::new(
                options,
                format.clone(),
                clock.clone(),
            )?));
        }
        if let Some(syslog) = &self.syslog {
            let options = SyslogOptions {
                address: syslog.address.clone(),
                tls: syslog.tls,
                ca_file: syslog.ca_file.clone(),
                hostname: syslog.hostname.clone(),
                timeout: Duration::from_secs(syslog.timeout_secs),
            };
            sinks.push(Arc::new(SyslogSink::new(options, format.clone())?));
        }
        if sinks.is_empty() {
            return Ok(None);
        }
        let policy = ForwardPolicy {
            batch: self.batch,
            interval: Duration::from_secs(self.interval_secs),
            max_backoff: Duration::from_secs(self.max_backoff_secs),
        };
        Ok(Some(AuditForwarder::new(store, clock, sinks, policy)))
    }
}
