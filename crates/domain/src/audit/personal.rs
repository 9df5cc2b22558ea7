//! Personal fields of an audit event and their erasure (chain version 2).
//!
//! A data subject's erasure must keep the audit trail (it is the evidence of
//! who did what) yet remove what identifies the person, without breaking the
//! hash chain. So from version 2 on, an event's hash does not cover its
//! personal fields (`actor_id`, `actor_user_id`, `target_id`, `ip`,
//! `user_agent`, `diff`) directly but a salted commitment to each:
//!
//! `commitment = SHA-256("karen-audit-pii\0" ‖ field salt ‖ field index ‖ encoded value)`
//!
//! (an absent field commits to 32 zero bytes). Each field's salt is derived
//! from one pseudorandom 16-byte salt per event, stored beside it (see
//! [`SaltSeed`] for how event salts are drawn). Verification
//! recomputes the commitments from the stored values, so a changed byte is
//! caught exactly as before.
//!
//! Erasing a field replaces its value with the erasure's pseudonym (ids) or
//! removes it (addresses, user agents, diffs), and stores the field's
//! commitment — computed from the original value — in place of its salt, with
//! the pseudonym of the erasure that did it. The event's hash still verifies;
//! the original value can no longer be confirmed by guessing, because its
//! salt is gone. Fields that were not erased keep their own salts and stay
//! verifiable.
//!
//! An erased field is only legitimate when an erasure event (`user.erase`)
//! later in the chain declares it: that event's diff holds the pseudonym, the
//! number of fields erased and a digest of their positions (see
//! [`ErasureLedger`]). The verifier recomputes both, so someone who edits the
//! database to "erase" who did something is caught.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{AuditEntry, ChainHash, hex};
use crate::{Error, Result};

/// The random salt stored with each version-2 event.
pub type Salt = [u8; 16];

/// The personal fields, in commitment order.
pub const PERSONAL_FIELDS: [&str; 6] = [
    "actor_id",
    "actor_user_id",
    "target_id",
    "ip",
    "user_agent",
    "diff",
];

const PII_DOMAIN: &[u8; 16] = b"karen-audit-pii\0";
const SALT_DOMAIN: &[u8; 16] = b"karen-audit-salt";
const SEED_DOMAIN: &[u8; 16] = b"karen-audit-seed";

/// The prefix of every erasure pseudonym.
pub const PSEUDONYM_PREFIX: &str = "erased:";

/// How one personal field is bound into a version-2 event's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSeal {
    /// The field is as written: its commitment is recomputed from its value.
    Salt(Salt),
    /// The field was erased by the erasure with pseudonym `by`.
    Erased { commitment: ChainHash, by: String },
}

/// How an event's personal fields are bound into its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersonalSeal {
    /// Chain version 1 (events written before erasure existed): the fields
    /// are hashed as they are, so they cannot be erased.
    Clear,
    /// Version 2 as written: every field's salt derives from this one.
    Salted(Salt),
    /// Version 2 after an erasure touched some fields.
    Redacted(Box<[FieldSeal; 6]>),
}

/// The source of the event salts of one transaction: one random seed, from
/// which each event's salt is derived by a keyed hash of its sequence number,
/// `SHA-256("karen-audit-seed" ‖ seed ‖ seq)[..16]`, instead of asking the
/// operating system for 16 random bytes per event.
///
/// This keeps the property erasure relies on. The seed is never stored, logged
/// or returned: it lives in memory for one transaction and is dropped with it.
/// Without it, an event's salt is a pseudorandom function's output at an input
/// no one else uses (sequence numbers are unique per chain and a seed serves
/// one transaction of one chain), so knowing the salts of the transaction's
/// other events reveals nothing about it. Once an erasure discards that salt,
/// its commitments are exactly as unlinkable to a guessed value as if the salt
/// had been drawn at random on its own.
pub struct SaltSeed([u8; 32]);

impl SaltSeed {
    /// A seed from 32 bytes of the caller's random generator (two random
    /// UUIDs will do: 244 random bits).
    pub fn new(first: [u8; 16], second: [u8; 16]) -> Self {
        let mut seed = [0; 32];
        seed[..16].copy_from_slice(&first);
        seed[16..].copy_from_slice(&second);
        Self(seed)
    }

    /// The salt of event `seq`.
    pub fn salt(&self, seq: i64) -> Salt {
        let mut hasher = Sha256::new();
        hasher.update(SEED_DOMAIN);
        hasher.update(self.0);
        hasher.update(seq.to_be_bytes());
        let digest = hasher.finalize();
        let mut salt = [0; 16];
        salt.copy_from_slice(&digest[..16]);
        salt
    }
}

impl std::fmt::Debug for SaltSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaltSeed([hidden])")
    }
}

fn field_salt(event_salt: &Salt, index: usize) -> Salt {
    let mut hasher = Sha256::new();
    hasher.update(SALT_DOMAIN);
    hasher.update(event_salt);
    hasher.update([u8::try_from(index).unwrap_or(u8::MAX)]);
    let digest = hasher.finalize();
    let mut salt = [0; 16];
    salt.copy_from_slice(&digest[..16]);
    salt
}

fn commit(salt: &Salt, index: usize, value: Option<&str>) -> ChainHash {
    let Some(text) = value else {
        return [0; 32];
    };
    let mut hasher = Sha256::new();
    hasher.update(PII_DOMAIN);
    hasher.update(salt);
    hasher.update([u8::try_from(index).unwrap_or(u8::MAX)]);
    hasher.update(u32::try_from(text.len()).unwrap_or(u32::MAX).to_be_bytes());
    hasher.update(text.as_bytes());
    hasher.finalize().into()
}

/// The entry's personal field `index` (see [`PERSONAL_FIELDS`]).
pub fn personal_field(entry: &AuditEntry, index: usize) -> Option<&str> {
    match index {
        0 => Some(entry.actor.id.as_str()),
        1 => entry.actor.user_id.as_deref(),
        2 => entry.target_id.as_deref(),
        3 => entry.ip.as_deref(),
        4 => entry.user_agent.as_deref(),
        _ => entry.diff.as_deref(),
    }
}

impl PersonalSeal {
    /// The seal of each field (`None` for version 1).
    fn fields(&self) -> Option<[FieldSeal; 6]> {
        match self {
            PersonalSeal::Clear => None,
            PersonalSeal::Salted(salt) => Some(std::array::from_fn(|i| {
                FieldSeal::Salt(field_salt(salt, i))
            })),
            PersonalSeal::Redacted(fields) => Some((**fields).clone()),
        }
    }

    /// The six commitments of `entry` under this seal, written into `out`
    /// (nothing for version 1, whose fields are hashed in clear).
    pub(crate) fn write_commitments(&self, entry: &AuditEntry, out: &mut Vec<u8>) {
        match self {
            PersonalSeal::Clear => {}
            PersonalSeal::Salted(salt) => {
                for index in 0..PERSONAL_FIELDS.len() {
                    match personal_field(entry, index) {
                        // Absent fields commit to zeros: no salt to derive.
                        None => out.extend_from_slice(&[0; 32]),
                        value => {
                            let salt = field_salt(salt, index);
                            out.extend_from_slice(&commit(&salt, index, value));
                        }
                    }
                }
            }
            PersonalSeal::Redacted(fields) => {
                for (index, seal) in fields.iter().enumerate() {
                    match seal {
                        FieldSeal::Salt(salt) => out.extend_from_slice(&commit(
                            salt,
                            index,
                            personal_field(entry, index),
                        )),
                        FieldSeal::Erased { commitment, .. } => out.extend_from_slice(commitment),
                    }
                }
            }
        }
    }

    /// The stored form: the event salt (intact version 2) and the per-field
    /// JSON (after an erasure).
    pub fn stored(&self) -> (Option<Vec<u8>>, Option<String>) {
        match self {
            PersonalSeal::Clear => (None, None),
            PersonalSeal::Salted(salt) => (Some(salt.to_vec()), None),
            PersonalSeal::Redacted(fields) => {
                let mut map = Map::new();
                for (name, seal) in PERSONAL_FIELDS.iter().zip(fields.iter()) {
                    let value = match seal {
                        FieldSeal::Salt(salt) => serde_json::json!({ "salt": hex(salt) }),
                        FieldSeal::Erased { commitment, by } => {
                            serde_json::json!({ "erased": hex(commitment), "by": by })
                        }
                    };
                    map.insert((*name).to_owned(), value);
                }
                (None, Some(Value::Object(map).to_string()))
            }
        }
    }

    /// Rebuilds a stored seal.
    pub fn from_stored(salt: Option<Vec<u8>>, redactions: Option<&str>) -> Result<Self> {
        let bad = |what: &str| Error::internal(format!("stored audit redactions: {what}"));
        match (salt, redactions) {
            (None, None) => Ok(PersonalSeal::Clear),
            (Some(salt), None) => Ok(PersonalSeal::Salted(
                salt.try_into()
                    .map_err(|_| bad("the salt is not 16 bytes"))?,
            )),
            (_, Some(text)) => {
                let value: Value = serde_json::from_str(text).map_err(|_| bad("not JSON"))?;
                let mut fields = Vec::with_capacity(PERSONAL_FIELDS.len());
                for name in PERSONAL_FIELDS {
                    let field = value.get(name).ok_or_else(|| bad("a field is missing"))?;
                    let text_of = |key: &str| field.get(key).and_then(Value::as_str);
                    let seal = match (text_of("salt"), text_of("erased"), text_of("by")) {
                        (Some(salt), None, None) => FieldSeal::Salt(
                            unhex(salt)
                                .and_then(|b| b.try_into().ok())
                                .ok_or_else(|| bad("a salt is not 16 bytes of hex"))?,
                        ),
                        (None, Some(commitment), Some(by)) => FieldSeal::Erased {
                            commitment: unhex(commitment)
                                .and_then(|b| b.try_into().ok())
                                .ok_or_else(|| bad("a commitment is not 32 bytes of hex"))?,
                            by: by.to_owned(),
                        },
                        _ => return Err(bad("a field is neither salted nor erased")),
                    };
                    fields.push(seal);
                }
                let fields: [FieldSeal; 6] = fields
                    .try_into()
                    .map_err(|_| bad("wrong number of fields"))?;
                Ok(PersonalSeal::Redacted(Box::new(fields)))
            }
        }
    }

    /// The erasures (pseudonyms) that touched each field, in field order.
    pub fn erased_by(&self) -> Vec<(usize, &str)> {
        match self {
            PersonalSeal::Redacted(fields) => fields
                .iter()
                .enumerate()
                .filter_map(|(i, f)| match f {
                    FieldSeal::Erased { by, .. } => Some((i, by.as_str())),
                    FieldSeal::Salt(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Which personal fields of one event an erasure removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasureMask {
    pub actor: bool,
    pub target: bool,
    pub network: bool,
    pub diff: bool,
}

impl ErasureMask {
    /// True when the mask removes nothing.
    pub fn is_empty(&self) -> bool {
        !(self.actor || self.target || self.network || self.diff)
    }

    fn covers(&self, index: usize) -> bool {
        match index {
            0 | 1 => self.actor,
            2 => self.target,
            3 | 4 => self.network,
            _ => self.diff,
        }
    }
}

/// Erases the fields `mask` names from `entry` (sealed by `seal`): ids become
/// `pseudonym`, the rest is removed. Returns the erased entry, its new seal
/// and the indexes of the fields it erased (those that held a value), or
/// `None` for a version-1 event, whose fields cannot be erased without
/// breaking the chain.
pub fn erase_fields(
    entry: &AuditEntry,
    seal: &PersonalSeal,
    mask: ErasureMask,
    pseudonym: &str,
) -> Option<(AuditEntry, PersonalSeal, Vec<usize>)> {
    let mut fields = seal.fields()?;
    let mut erased = entry.clone();
    let mut touched = Vec::new();
    for (index, field) in fields.iter_mut().enumerate() {
        let FieldSeal::Salt(salt) = field else {
            continue;
        };
        let value = personal_field(entry, index);
        if !mask.covers(index) || value.is_none() {
            continue;
        }
        *field = FieldSeal::Erased {
            commitment: commit(salt, index, value),
            by: pseudonym.to_owned(),
        };
        touched.push(index);
        match index {
            0 => erased.actor.id = pseudonym.to_owned(),
            1 => erased.actor.user_id = Some(pseudonym.to_owned()),
            2 => erased.target_id = Some(pseudonym.to_owned()),
            3 => erased.ip = None,
            4 => erased.user_agent = None,
            _ => erased.diff = None,
        }
    }
    Some((erased, PersonalSeal::Redacted(Box::new(fields)), touched))
}

/// The running account of the fields one erasure removed, in chain order:
/// their number, the first event, and a digest of `(seq, field index)` pairs.
#[derive(Debug, Clone)]
pub struct ErasureLedger {
    pub fields: u64,
    pub first_seq: i64,
    hasher: Sha256,
}

impl ErasureLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self {
            fields: 0,
            first_seq: 0,
            hasher: Sha256::new(),
        }
    }

    /// Adds field `index` of event `seq` (call in sequence, then field order).
    pub fn add(&mut self, seq: i64, index: usize) {
        if self.fields == 0 {
            self.first_seq = seq;
        }
        self.fields += 1;
        self.hasher.update(seq.to_be_bytes());
        self.hasher.update([u8::try_from(index).unwrap_or(u8::MAX)]);
    }

    /// The digest as lowercase hex.
    pub fn digest(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }

    /// What an erasure event declares (its diff's `after`).
    pub fn declaration(&self, pseudonym: &str) -> Value {
        serde_json::json!({
            "pseudonym": pseudonym,
            "audit_fields": self.fields,
            "audit_first_seq": self.first_seq,
            "audit_digest": self.digest(),
        })
    }
}

impl Default for ErasureLedger {
    fn default() -> Self {
        Self::new()
    }
}

/// What an erasure event declared, read back from its diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureDeclaration {
    pub pseudonym: String,
    pub fields: u64,
    pub first_seq: i64,
    pub digest: String,
}

/// The action of an erasure event.
pub const ERASURE_ACTION: &str = "user.erase";

impl ErasureDeclaration {
    /// The declaration of an erasure event's diff, if it is one.
    pub fn of(entry: &AuditEntry) -> Option<Self> {
        if entry.action != ERASURE_ACTION {
            return None;
        }
        let diff: Value = serde_json::from_str(entry.diff.as_deref()?).ok()?;
        let after = diff.get("after")?;
        Some(Self {
            pseudonym: after.get("pseudonym")?.as_str()?.to_owned(),
            fields: after.get("audit_fields")?.as_u64()?,
            first_seq: after.get("audit_first_seq")?.as_i64()?,
            digest: after.get("audit_digest")?.as_str()?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::TenantId;
    use crate::audit::{ActorRecord, GENESIS_HASH, Outcome, event_hash};
    use time::OffsetDateTime;

    fn entry() -> AuditEntry {
        AuditEntry {
            actor: ActorRecord::stored("user", "u-1".into(), None).unwrap(),
            action: "user.update".into(),
            target_type: Some("user".into()),
            target_id: Some("u-2".into()),
            outcome: Outcome::Success,
            ip: Some("192.0.2.7".into()),
            user_agent: Some("curl/8".into()),
            request_id: Some("r".into()),
            diff: Some(r#"{"after":{"email":"a@b.test"}}"#.into()),
            at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn erasure_keeps_the_hash_and_changing_a_kept_field_breaks_it() {
        let tenant = TenantId::generate();
        let seal = PersonalSeal::Salted([7; 16]);
        let event = entry().seal(tenant, 0, GENESIS_HASH, seal.clone());
        let mask = ErasureMask {
            target: true,
            diff: true,
            ..ErasureMask::default()
        };
        let (erased, new_seal, touched) =
            erase_fields(&event.entry, &seal, mask, "erased:abc").unwrap();
        assert_eq!(touched, vec![2, 5]);
        assert_eq!(erased.target_id.as_deref(), Some("erased:abc"));
        assert_eq!(erased.diff, None);
        let mut buffer = Vec::new();
        let hash = event_hash(&mut buffer, tenant, 1, &GENESIS_HASH, &erased, &new_seal);
        assert_eq!(hash, event.hash);
        // The seal survives storage.
        let (salt, json) = new_seal.stored();
        let back = PersonalSeal::from_stored(salt, json.as_deref()).unwrap();
        assert_eq!(back, new_seal);
        // A kept field is still covered.
        let mut changed = erased.clone();
        changed.ip = Some("192.0.2.8".into());
        assert_ne!(
            event_hash(&mut buffer, tenant, 1, &GENESIS_HASH, &changed, &back),
            event.hash
        );
        // An erased field's pseudonym is display only, but erasing a field
        // needs its original value: a guessed value gives another commitment.
        let mut guessed = event.entry.clone();
        guessed.ip = Some("192.0.2.9".into());
        let forged = erase_fields(
            &guessed,
            &seal,
            ErasureMask {
                network: true,
                ..mask
            },
            "x",
        )
        .unwrap()
        .1;
        assert_ne!(
            event_hash(&mut buffer, tenant, 1, &GENESIS_HASH, &guessed, &forged),
            event.hash
        );
    }

    #[test]
    fn seeded_salts_differ_per_event_and_per_seed() {
        let seed = SaltSeed::new([1; 16], [2; 16]);
        assert_eq!(seed.salt(5), seed.salt(5));
        assert_ne!(seed.salt(5), seed.salt(6));
        assert_ne!(seed.salt(5), SaltSeed::new([1; 16], [3; 16]).salt(5));
        assert_eq!(format!("{seed:?}"), "SaltSeed([hidden])");
    }

    #[test]
    fn version_one_events_cannot_be_erased() {
        let mask = ErasureMask {
            actor: true,
            ..ErasureMask::default()
        };
        assert!(erase_fields(&entry(), &PersonalSeal::Clear, mask, "erased:x").is_none());
    }

    #[test]
    fn the_ledger_is_order_sensitive() {
        let mut a = ErasureLedger::new();
        a.add(3, 0);
        a.add(4, 2);
        let mut b = ErasureLedger::new();
        b.add(4, 2);
        b.add(3, 0);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.first_seq, 3);
        let declaration = a.declaration("erased:1");
        let mut event = entry();
        event.action = ERASURE_ACTION.into();
        event.diff = Some(serde_json::json!({ "before": null, "after": declaration }).to_string());
        let read = ErasureDeclaration::of(&event).unwrap();
        assert_eq!(read.fields, 2);
        assert_eq!(read.digest, a.digest());
    }
}
