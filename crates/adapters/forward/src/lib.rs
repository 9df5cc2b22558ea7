//! Audit collectors: where copies of the audit trail go (the forwarder in
//! `karen_app::audit_forward` decides when). Both speak the same JSON form
//! of an event as `GET /v1/audit/export?format=jsonl`, given to them by the
//! composition root.
//!
//! - [`SyslogSink`]: RFC 5424 messages over TCP, optionally TLS (RFC 5425),
//!   framed by octet counting (RFC 6587);
//! - [`WebhookSink`]: an HTTPS POST of each batch with an HMAC-SHA256
//!   signature of the body.

use std::sync::Arc;

use karen_domain::Error;
use karen_domain::audit::AuditEvent;

mod syslog;
mod webhook;

pub use syslog::{SyslogOptions, SyslogSink};
pub use webhook::{SIGNATURE_HEADER, WebhookOptions, WebhookSink, signature};

/// Turns an event into its JSON form.
pub type EventFormat = Arc<dyn Fn(&AuditEvent) -> serde_json::Value + Send + Sync>;

fn unavailable(component: &'static str, detail: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        component,
        detail: detail.to_string(),
    }
}
