//! An HTTPS webhook: each batch is one POST of
//! `{"tenant_id": …, "events": [ … ]}`, signed so that the collector can
//! tell it came from this Karen and was not replayed long after:
//! `Karen-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! Any 2xx answer accepts the batch; anything else (or no answer within the
//! timeout) leaves it to be sent again. Redirects are not followed.

use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use karen_domain::audit::{AuditEvent, hex};
use karen_domain::clock::Clock;
use karen_domain::ports::AuditSink;
use karen_domain::{Result, TenantId};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;

use crate::{EventFormat, unavailable};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "karen-signature";

/// Where and how to post.
#[derive(Clone)]
pub struct WebhookOptions {
    pub url: reqwest::Url,
    /// The shared HMAC key.
    pub secret: SecretString,
    /// The whole request, connection included.
    pub timeout: Duration,
}

/// Posts batches of events to a webhook.
pub struct WebhookSink {
    client: reqwest::Client,
    options: WebhookOptions,
    format: EventFormat,
    clock: Arc<dyn Clock>,
}

/// An error with its causes ("error sending request: … connection refused").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The signature header's value for `body` sent at `unix_secs`.
pub fn signature(secret: &[u8], unix_secs: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(unix_secs.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("t={unix_secs},v1={}", hex(context.sign().as_ref()))
}

impl WebhookSink {
    pub fn new(
        options: WebhookOptions,
        format: EventFormat,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .build()
            .map_err(|e| unavailable("audit webhook", e))?;
        Ok(Self {
            client,
            options,
            format,
            clock,
        })
    }
}

#[async_trait]
impl AuditSink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, tenant: TenantId, events: &[AuditEvent]) -> Result<()> {
        let body = serde_json::json!({
            "tenant_id": tenant.to_string(),
            "events": events.iter().map(|e| (self.format)(e)).collect::<Vec<_>>(),
        });
        let body = serde_json::to_vec(&body).map_err(|e| unavailable("audit webhook", e))?;
        let now = self.clock.now().unix_timestamp();
        let signed = signature(self.options.secret.expose_secret().as_bytes(), now, &body);
        let reply = self
            .client
            .post(self.options.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signed)
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable("audit webhook", with_causes(&e.without_url())))?;
        let status = reply.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(unavailable(
                "audit webhook",
                format!("the collector answered {status}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        // Computed independently: Python's hmac.new(b"key", b'1700000000.{"a":1}', sha256).
        assert_eq!(
            signature(b"key", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }
}
