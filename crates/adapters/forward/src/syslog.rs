//! Syslog over TCP (RFC 6587 octet counting) or TLS (RFC 5425): one RFC 5424
//! message per event, facility "log audit" (13), severity notice for
//! successes and warning for failures and denials:
//!
//! `<109>1 2026-12-02T10:00:00.123Z host karen - audit [karen@32473 tenant="…" seq="42" action="user.create" outcome="success"] BOM{json}`
//!
//! A batch counts as accepted once every frame was written and flushed
//! (syslog has no acknowledgement); a broken connection is dropped and the
//! batch sent again on a new one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use karen_domain::audit::{AuditEvent, Outcome};
use karen_domain::ports::AuditSink;
use karen_domain::{Error, Result, TenantId};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

use crate::{EventFormat, unavailable};

/// The private enterprise number RFC 5612 reserves for documentation,
/// naming Karen's structured-data element.
const SD_ID: &str = "karen@32473";
/// Facility 13: log audit.
const FACILITY: u8 = 13;

/// Where the collector listens.
#[derive(Debug, Clone)]
pub struct SyslogOptions {
    /// `host:port`.
    pub address: String,
    /// Wrap the connection in TLS (RFC 5425).
    pub tls: bool,
    /// PEM roots to trust for TLS; the system's roots when absent.
    pub ca_file: Option<PathBuf>,
    /// The HOSTNAME field; this machine's name when absent.
    pub hostname: Option<String>,
    /// Connecting and each write.
    pub timeout: Duration,
}

trait Connection: AsyncWrite + Unpin + Send {}
impl<T: AsyncWrite + Unpin + Send> Connection for T {}

/// Sends events to a syslog collector.
pub struct SyslogSink {
    options: SyslogOptions,
    hostname: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    format: EventFormat,
    connection: Mutex<Option<Box<dyn Connection>>>,
}

fn config_error(detail: impl std::fmt::Display) -> Error {
    Error::internal(format!("audit.forward.syslog: {detail}"))
}

fn roots(ca_file: Option<&PathBuf>) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| config_error(format!("ca_file {}: {e}", path.display())))?
            {
                let cert =
                    cert.map_err(|e| config_error(format!("ca_file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| config_error(format!("ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system certificate rustls cannot use is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(config_error("no trusted root certificate for TLS"));
    }
    Ok(roots)
}

/// Escapes a structured-data parameter value (RFC 5424 §6.3.3).
fn sd_value(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Keeps a header field within RFC 5424's printable US-ASCII, at most `max` long.
fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() { "-".into() } else { field }
}

/// One event as an octet-counted RFC 5424 frame.
pub(crate) fn frame(hostname: &str, event: &AuditEvent, json: &serde_json::Value) -> Vec<u8> {
    let severity = match event.entry.outcome {
        Outcome::Success => 5,
        _ => 4,
    };
    let at = event
        .entry
        .at
        .format(&Rfc3339)
        .unwrap_or_else(|_| "-".into());
    let mut message = format!(
        "<{}>1 {at} {hostname} karen - audit [{SD_ID} tenant=\"{}\" seq=\"{}\" action=\"",
        FACILITY * 8 + severity,
        event.tenant_id,
        event.seq,
    );
    sd_value(&mut message, &event.entry.action);
    message.push_str("\" outcome=\"");
    message.push_str(event.entry.outcome.as_str());
    message.push_str("\"] \u{feff}");
    message.push_str(&json.to_string());
    let mut framed = format!("{} ", message.len()).into_bytes();
    framed.extend_from_slice(message.as_bytes());
    framed
}

impl SyslogSink {
    pub fn new(options: SyslogOptions, format: EventFormat) -> Result<Self> {
        let tls = if options.tls {
            let host = options
                .address
                .rsplit_once(':')
                .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
                .ok_or_else(|| config_error("address must be host:port"))?;
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| config_error(format!("address host {host}: {e}")))?;
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots(options.ca_file.as_ref())?)
                .with_no_client_auth();
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let hostname = header_field(
            &options.hostname.clone().unwrap_or_else(|| {
                hostname::get()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
            255,
        );
        Ok(Self {
            options,
            hostname,
            tls,
            format,
            connection: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Box<dyn Connection>> {
        let timeout = self.options.timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(self.options.address.as_str()))
            .await
            .map_err(|_| unavailable("audit syslog", "connecting timed out"))?
            .map_err(|e| unavailable("audit syslog", e))?;
        tcp.set_nodelay(true)
            .map_err(|e| unavailable("audit syslog", e))?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| unavailable("audit syslog", "the TLS handshake timed out"))?
                    .map_err(|e| unavailable("audit syslog", e))?;
                Ok(Box::new(tls))
            }
        }
    }

    async fn write_all(&self, connection: &mut Box<dyn Connection>, bytes: &[u8]) -> Result<()> {
        let write = async {
            connection.write_all(bytes).await?;
            connection.flush().await
        };
        tokio::time::timeout(self.options.timeout, write)
            .await
            .map_err(|_| unavailable("audit syslog", "writing timed out"))?
            .map_err(|e| unavailable("audit syslog", e))
    }
}

#[async_trait]
impl AuditSink for SyslogSink {
    fn name(&self) -> &'static str {
        "syslog"
    }

    async fn deliver(&self, _tenant: TenantId, events: &[AuditEvent]) -> Result<()> {
        let mut bytes = Vec::new();
        for event in events {
            bytes.extend(frame(&self.hostname, event, &(self.format)(event)));
        }
        let mut slot = self.connection.lock().await;
        // A kept connection may have been closed by the collector meanwhile:
        // one retry on a fresh connection.
        if let Some(mut kept) = slot.take()
            && self.write_all(&mut kept, &bytes).await.is_ok()
        {
            *slot = Some(kept);
            return Ok(());
        }
        let mut fresh = self.connect().await?;
        self.write_all(&mut fresh, &bytes).await?;
        *slot = Some(fresh);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use karen_domain::audit::{ActorRecord, AuditEntry, GENESIS_HASH};
    use karen_domain::{Actor, SystemReason};

    use super::*;

    fn event(action: &str, outcome: Outcome) -> AuditEvent {
        AuditEvent {
            tenant_id: TenantId::generate(),
            seq: 7,
            entry: AuditEntry {
                actor: ActorRecord::of(Actor::System(SystemReason::Cli)),
                action: action.into(),
                target_type: None,
                target_id: None,
                outcome,
                ip: None,
                user_agent: None,
                request_id: None,
                diff: None,
                at: time::macros::datetime!(2026-12-02 10:00:00.123 UTC),
            },
            prev_hash: GENESIS_HASH,
            hash: GENESIS_HASH,
            personal: karen_domain::audit::PersonalSeal::Salted([0; 16]),
        }
    }

    #[test]
    fn frames_are_octet_counted_rfc5424_messages() {
        let e = event("user.create", Outcome::Success);
        let framed =
            String::from_utf8(frame("host-1", &e, &serde_json::json!({"seq": 7}))).unwrap();
        let (length, message) = framed.split_once(' ').unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), message.len());
        assert_eq!(
            message,
            format!(
                "<109>1 2026-12-02T10:00:00.123Z host-1 karen - audit [karen@32473 tenant=\"{}\" seq=\"7\" action=\"user.create\" outcome=\"success\"] \u{feff}{{\"seq\":7}}",
                e.tenant_id
            )
        );
    }

    #[test]
    fn failures_are_warnings_and_values_are_escaped() {
        let e = event("a\"b]c\\d", Outcome::Denied);
        let framed = String::from_utf8(frame("h", &e, &serde_json::json!({}))).unwrap();
        assert!(framed.contains(" <108>1 "), "{framed}");
        assert!(framed.contains("action=\"a\\\"b\\]c\\\\d\""), "{framed}");
        assert_eq!(header_field("bad host\u{7f}é", 255), "badhost");
        assert_eq!(header_field("", 255), "-");
    }
}
