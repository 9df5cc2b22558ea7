//! The tamper-evident audit trail: events, their canonical encoding, the
//! per-tenant SHA-256 hash chain, signed checkpoints, and redaction of secrets
//! in before/after diffs.
//!
//! # Canonical encoding (version 1)
//!
//! The hash of an event is `SHA-256(encoding)`, where `encoding` is, in order:
//!
//! 1. the 16 bytes `karen-audit-v1\0\0` (domain separation and version);
//! 2. the sequence number as 8 bytes, unsigned big-endian;
//! 3. the previous event's hash, 32 bytes (all zero for sequence 1);
//! 4. the tenant id, 16 bytes (the UUID's bytes);
//! 5. the time in milliseconds since the Unix epoch, 8 bytes, signed big-endian;
//! 6. then the text fields `actor_kind`, `actor_id`, `actor_user_id`, `action`,
//!    `target_type`, `target_id`, `outcome`, `ip`, `user_agent`, `request_id`,
//!    `diff`, each as one byte `0` (absent) or `1` (present) followed, when
//!    present, by its UTF-8 length as 4 bytes unsigned big-endian and its bytes.
//!
//! Ids are written as lowercase hyphenated UUID text; `diff` is the exact JSON
//! text stored (never re-serialised), so the bytes hashed are the bytes kept.
//!
//! # Version 2
//!
//! Events written since erasure support use the domain `karen-audit-v2\0\0`
//! and, after the time, the text fields `actor_kind`, `action`,
//! `target_type`, `outcome` and `request_id` encoded as above, then a 32-byte
//! salted commitment to each personal field (`actor_id`, `actor_user_id`,
//! `target_id`, `ip`, `user_agent`, `diff`): see [`personal`], which also
//! explains how an erasure removes them without breaking the chain.
//!
//! A checkpoint signs, with Ed25519, the 16 bytes `karen-audit-ckpt`, the
//! tenant id (16 bytes), the sequence number (8 bytes, big-endian), the hash
//! of the event at that sequence number (32 bytes) and the signing time in
//! milliseconds (8 bytes, signed big-endian).

use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::clock::to_millis;
use crate::principal::{Actor, SystemReason};
use crate::{Error, Result, TenantId};

pub mod personal;
pub use personal::PersonalSeal;

/// A SHA-256 hash of the chain.
pub type ChainHash = [u8; 32];

/// The "previous hash" of the first event of a chain.
pub const GENESIS_HASH: ChainHash = [0; 32];

/// The id under which the platform chain is hashed and signed: the nil UUID,
/// which no tenant has (tenant ids are random). The platform chain records
/// operator actions that belong to no tenant (tenant lifecycle, operator
/// keys, platform settings). It is stored in tables of its own
/// (`platform_audit_*`, visible only to platform transactions), not under
/// this id in the tenant tables: it is no tenant's data, so no tenant scope
/// may reach it, a tenant's purge must never reach it, and a reserved
/// tenant row would surface in every list of tenants.
pub const PLATFORM_CHAIN: TenantId = TenantId::from_uuid(uuid::Uuid::nil());

const EVENT_DOMAIN_V1: &[u8; 16] = b"karen-audit-v1\0\0";
const EVENT_DOMAIN_V2: &[u8; 16] = b"karen-audit-v2\0\0";
const CHECKPOINT_DOMAIN: &[u8; 16] = b"karen-audit-ckpt";

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The action was attempted and failed (e.g. a wrong password).
    Failure,
    /// The action was refused for lack of rights.
    Denied,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "success" => Ok(Outcome::Success),
            "failure" => Ok(Outcome::Failure),
            "denied" => Ok(Outcome::Denied),
            _ => Err(Error::invalid(
                Some("outcome"),
                "outcome must be success, failure or denied",
            )),
        }
    }
}

/// The actor of an event as stored: a kind, an id, and for API keys the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorRecord {
    /// `user`, `api_key`, `operator` or `system`.
    pub kind: &'static str,
    /// A user, API key or operator key id, or the system job's name.
    pub id: String,
    /// The owner of an API key.
    pub user_id: Option<String>,
}

impl SystemReason {
    /// The system job's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            SystemReason::Login => "login",
            SystemReason::TokenRefresh => "token_refresh",
            SystemReason::Authenticate => "authenticate",
            SystemReason::Lifecycle => "lifecycle",
            SystemReason::Cli => "cli",
            SystemReason::Routing => "routing",
            SystemReason::Indexing => "indexing",
            SystemReason::AuditForwarding => "audit_forwarding",
            SystemReason::Retention => "retention",
            SystemReason::Metering => "metering",
        }
    }
}

impl ActorRecord {
    /// The stored form of `actor`.
    pub fn of(actor: Actor) -> Self {
        match actor {
            Actor::User(user) => Self {
                kind: "user",
                id: user.to_string(),
                user_id: None,
            },
            Actor::ApiKey { key_id, user_id } => Self {
                kind: "api_key",
                id: key_id.to_string(),
                user_id: Some(user_id.to_string()),
            },
            Actor::Operator(key) => Self {
                kind: "operator",
                id: key.to_string(),
                user_id: None,
            },
            Actor::System(reason) => Self {
                kind: "system",
                id: reason.as_str().to_owned(),
                user_id: None,
            },
        }
    }

    /// `kind:id`, the form in which other records name who made them
    /// (legal holds, password tokens); erasure replaces a user's label.
    pub fn label(actor: Actor) -> String {
        let record = Self::of(actor);
        format!("{}:{}", record.kind, record.id)
    }

    /// Rebuilds a stored actor (`kind` must be one of the four names).
    pub fn stored(kind: &str, id: String, user_id: Option<String>) -> Result<Self> {
        let kind = match kind {
            "user" => "user",
            "api_key" => "api_key",
            "operator" => "operator",
            "system" => "system",
            other => {
                return Err(Error::internal(format!(
                    "stored audit actor kind '{other}' is unknown"
                )));
            }
        };
        Ok(Self { kind, id, user_id })
    }
}

/// Parses an actor kind given in a filter.
pub fn parse_actor_kind(text: &str) -> Result<&'static str> {
    match text {
        "user" => Ok("user"),
        "api_key" => Ok("api_key"),
        "operator" => Ok("operator"),
        "system" => Ok("system"),
        _ => Err(Error::invalid(
            Some("actor_kind"),
            "actor_kind must be user, api_key, operator or system",
        )),
    }
}

/// Checks an action name: dotted lowercase words (`user.create`,
/// `auth.login.failed`), at most 100 characters.
pub fn parse_action(text: &str) -> Result<String> {
    let ok = !text.is_empty()
        && text.len() <= 100
        && text
            .split('.')
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(Error::invalid(
            Some("action"),
            "action must be dotted lowercase words such as user.create",
        ))
    }
}

/// What happened, before it is placed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub actor: ActorRecord,
    /// A stable dotted name such as `user.create` or `auth.login.failed`.
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub outcome: Outcome,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// `{"before": …, "after": …}` as JSON text, secrets redacted.
    pub diff: Option<String>,
    pub at: OffsetDateTime,
}

/// An event in a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub tenant_id: TenantId,
    /// 1, 2, 3… per tenant, without gaps.
    pub seq: i64,
    pub entry: AuditEntry,
    pub prev_hash: ChainHash,
    pub hash: ChainHash,
    /// How the personal fields are bound into the hash.
    pub personal: PersonalSeal,
}

fn field(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// Writes the canonical encoding of an event into `out` (cleared first), so a
/// verifier can reuse one buffer for every row.
pub fn encode_event(
    out: &mut Vec<u8>,
    tenant: TenantId,
    seq: i64,
    prev_hash: &ChainHash,
    entry: &AuditEntry,
    personal: &PersonalSeal,
) {
    out.clear();
    let clear = matches!(personal, PersonalSeal::Clear);
    out.extend_from_slice(if clear {
        EVENT_DOMAIN_V1
    } else {
        EVENT_DOMAIN_V2
    });
    out.extend_from_slice(&u64::try_from(seq).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(prev_hash);
    out.extend_from_slice(tenant.as_uuid().as_bytes());
    out.extend_from_slice(&to_millis(entry.at).to_be_bytes());
    if !clear {
        field(out, Some(entry.actor.kind));
        field(out, Some(&entry.action));
        field(out, entry.target_type.as_deref());
        field(out, Some(entry.outcome.as_str()));
        field(out, entry.request_id.as_deref());
        personal.write_commitments(entry, out);
        return;
    }
    field(out, Some(entry.actor.kind));
    field(out, Some(&entry.actor.id));
    field(out, entry.actor.user_id.as_deref());
    field(out, Some(&entry.action));
    field(out, entry.target_type.as_deref());
    field(out, entry.target_id.as_deref());
    field(out, Some(entry.outcome.as_str()));
    field(out, entry.ip.as_deref());
    field(out, entry.user_agent.as_deref());
    field(out, entry.request_id.as_deref());
    field(out, entry.diff.as_deref());
}

/// SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> ChainHash {
    Sha256::digest(bytes).into()
}

/// The hash of an event (see the module documentation).
pub fn event_hash(
    buffer: &mut Vec<u8>,
    tenant: TenantId,
    seq: i64,
    prev_hash: &ChainHash,
    entry: &AuditEntry,
    personal: &PersonalSeal,
) -> ChainHash {
    encode_event(buffer, tenant, seq, prev_hash, entry, personal);
    sha256(buffer)
}

impl AuditEntry {
    /// Places the entry after `(prev_seq, prev_hash)` in `tenant`'s chain,
    /// its personal fields bound by `personal` (a fresh random salt for new
    /// events).
    pub fn seal(
        self,
        tenant: TenantId,
        prev_seq: i64,
        prev_hash: ChainHash,
        personal: PersonalSeal,
    ) -> AuditEvent {
        let seq = prev_seq + 1;
        let mut buffer = Vec::with_capacity(256);
        let hash = event_hash(&mut buffer, tenant, seq, &prev_hash, &self, &personal);
        AuditEvent {
            tenant_id: tenant,
            seq,
            entry: self,
            prev_hash,
            hash,
            personal,
        }
    }
}

/// A signed statement that a tenant's chain had `hash` at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub tenant_id: TenantId,
    pub seq: i64,
    pub hash: ChainHash,
    pub signed_at: OffsetDateTime,
    /// Which key signed (see [`key_id_of`]).
    pub key_id: String,
    /// Ed25519 signature (64 bytes) over [`checkpoint_message`].
    pub signature: Vec<u8>,
}

/// The bytes a checkpoint signature covers.
pub fn checkpoint_message(
    tenant: TenantId,
    seq: i64,
    hash: &ChainHash,
    signed_at: OffsetDateTime,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.extend_from_slice(CHECKPOINT_DOMAIN);
    out.extend_from_slice(tenant.as_uuid().as_bytes());
    out.extend_from_slice(&u64::try_from(seq).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(&to_millis(signed_at).to_be_bytes());
    out
}

/// A key's id: the first 16 hex digits of the SHA-256 of its public key.
pub fn key_id_of(public_key: &[u8]) -> String {
    hex(&sha256(public_key)[..8])
}

/// Parses a raw Ed25519 public key given as 64 hex digits (as `karen audit
/// keygen` and `GET /v1/audit/public-key` print it).
pub fn parse_public_key(text: &str) -> Result<Vec<u8>> {
    personal::unhex(text.trim())
        .filter(|key| key.len() == 32)
        .ok_or_else(|| {
            Error::invalid(
                Some("public_key"),
                "an audit public key is 64 hex digits (a raw Ed25519 key)",
            )
        })
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub from: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub actor_kind: Option<&'static str>,
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub outcome: Option<Outcome>,
}

/// Field names whose values never enter a diff.
const SECRET_FIELDS: &[&str] = &[
    "password",
    "password_hash",
    "secret",
    "secret_hash",
    "api_key",
    "token",
    "access_token",
    "refresh_token",
    "private_key",
    "client_secret",
    "authorization",
    "credential",
    "credentials",
];

fn is_secret_field(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_FIELDS.iter().any(|s| lower == *s)
        || lower.ends_with("_secret")
        || lower.ends_with("_password")
        || lower.ends_with("_token")
        || lower.ends_with("_key")
}

/// Replaces the values of secret-looking fields (at any depth) with `"[redacted]"`.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, inner) in map.iter_mut() {
                if is_secret_field(name) && !inner.is_null() {
                    *inner = Value::String("[redacted]".into());
                } else {
                    redact(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A before/after diff as stored JSON text, secrets redacted.
pub fn diff_text(before: Option<Value>, after: Option<Value>) -> Option<String> {
    if before.is_none() && after.is_none() {
        return None;
    }
    let mut diff = serde_json::json!({ "before": before, "after": after });
    redact(&mut diff);
    serde_json::to_string(&diff).ok()
}

/// Ids for actors in filters (API keys and operators are ids of their own kind).
pub fn actor_id_text(actor: Actor) -> String {
    ActorRecord::of(actor).id
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            actor: ActorRecord::of(Actor::System(SystemReason::Cli)),
            action: action.into(),
            target_type: Some("user".into()),
            target_id: None,
            outcome: Outcome::Success,
            ip: Some("127.0.0.1".into()),
            user_agent: None,
            request_id: None,
            diff: diff_text(
                None,
                Some(serde_json::json!({"password": "x", "name": "n"})),
            ),
            at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_chain_links_and_any_change_alters_the_hash() {
        let tenant = TenantId::generate();
        let first = entry("user.create").seal(tenant, 0, GENESIS_HASH, PersonalSeal::Clear);
        let second =
            entry("user.update").seal(tenant, first.seq, first.hash, PersonalSeal::Salted([1; 16]));
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev_hash, first.hash);
        let mut changed = first.entry.clone();
        changed.action = "user.creatf".into();
        let mut buffer = Vec::new();
        assert_ne!(
            event_hash(
                &mut buffer,
                tenant,
                1,
                &GENESIS_HASH,
                &changed,
                &PersonalSeal::Clear
            ),
            first.hash
        );
        // Absent and empty are different.
        let mut empty = first.entry.clone();
        empty.target_id = Some(String::new());
        assert_ne!(
            event_hash(
                &mut buffer,
                tenant,
                1,
                &GENESIS_HASH,
                &empty,
                &PersonalSeal::Clear
            ),
            first.hash
        );
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let diff = diff_text(
            Some(serde_json::json!({"api_key": "sk-1", "nested": {"client_secret": "s", "name": "a"}})),
            None,
        )
        .unwrap();
        assert!(!diff.contains("sk-1") && !diff.contains("\"s\""), "{diff}");
        assert!(diff.contains("\"name\":\"a\""));
    }

    #[test]
    fn actions_are_dotted_lowercase() {
        assert!(parse_action("auth.login.failed").is_ok());
        assert!(parse_action("User.create").is_err());
        assert!(parse_action("a..b").is_err());
    }
}
