//! The one place where stored content (messages, memories, document text and
//! headings, provider credentials) becomes bytes in the store and back.
//!
//! Format 0 is plain UTF-8 (rows written before encryption, or with
//! encryption switched off). Format 1 is `[1][key version: u32 BE][nonce 12]
//! [AES-256-GCM ciphertext + tag]` under the tenant's data key of that version,
//! with associated data binding the tenant, table, column and row id, so a
//! value copied to another row, column or tenant does not decrypt.

use std::collections::HashMap;
use std::sync::Arc;

use karen_domain::ports::{DataCipher, DataKey};
use karen_domain::{Error, TenantId};
use uuid::Uuid;

/// Format byte: plain UTF-8.
const PLAIN: u8 = 0;
/// Format byte: AES-256-GCM under a tenant data key version.
const SEALED: u8 = 1;
/// Format byte and key version.
const HEADER_LEN: usize = 5;

/// Where a value is stored; encrypted values are bound to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub table: &'static str,
    pub column: &'static str,
    pub row: Uuid,
}

impl Slot {
    pub(crate) fn new(table: &'static str, column: &'static str, row: Uuid) -> Self {
        Self { table, column, row }
    }
}

/// The tenant's unwrapped data keys for one transaction: every version (to
/// read) and the current one (to write). Without a cipher, values are
/// written plain (encryption switched off).
pub(crate) struct KeyRing {
    tenant: TenantId,
    cipher: Option<Arc<dyn DataCipher>>,
    keys: HashMap<u32, Arc<DataKey>>,
    current: Option<u32>,
}

impl KeyRing {
    /// A ring that writes plain values and reads only plain values.
    pub(crate) fn plain(tenant: TenantId) -> Self {
        Self {
            tenant,
            cipher: None,
            keys: HashMap::new(),
            current: None,
        }
    }

    /// A ring over unwrapped keys; `current` seals new values.
    pub(crate) fn new(
        tenant: TenantId,
        cipher: Arc<dyn DataCipher>,
        keys: HashMap<u32, Arc<DataKey>>,
        current: Option<u32>,
    ) -> Self {
        Self {
            tenant,
            cipher: Some(cipher),
            keys,
            current,
        }
    }

    /// Whether values are encrypted (and so a current key is needed to write).
    pub(crate) fn encrypts(&self) -> bool {
        self.cipher.is_some()
    }

    /// The version new values are sealed with.
    pub(crate) fn current(&self) -> Option<u32> {
        self.current
    }

    /// Encodes `text` for storage at `slot`.
    pub(crate) fn seal(&self, slot: Slot, text: &str) -> Result<Vec<u8>, Error> {
        let Some(cipher) = &self.cipher else {
            let mut bytes = Vec::with_capacity(text.len() + 1);
            bytes.push(PLAIN);
            bytes.extend_from_slice(text.as_bytes());
            return Ok(bytes);
        };
        let version = self
            .current
            .ok_or_else(|| Error::internal("no current data key to seal with"))?;
        let key = self
            .keys
            .get(&version)
            .ok_or_else(|| Error::internal("the current data key is not loaded"))?;
        let mut header = [0u8; HEADER_LEN];
        header[0] = SEALED;
        header[1..].copy_from_slice(&version.to_be_bytes());
        let sealed = cipher.seal(
            key,
            &associated_data(self.tenant, slot, &header),
            text.as_bytes(),
        )?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + sealed.len());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&sealed);
        Ok(bytes)
    }

    /// Decodes the value stored at `slot`.
    pub(crate) fn open(&self, slot: Slot, bytes: &[u8]) -> Result<String, Error> {
        let text = match bytes.split_first() {
            Some((&PLAIN, text)) => text.to_vec(),
            Some((&SEALED, _)) => {
                let version = version_of(bytes)
                    .ok_or_else(|| Error::internal("stored encrypted content is truncated"))?;
                let cipher = self.cipher.as_ref().ok_or_else(|| Error::Unavailable {
                    component: "encryption",
                    detail: "stored content is encrypted but encryption is switched off; configure the master key (encryption.master_key_file or KAREN_MASTER_KEY)".into(),
                })?;
                let key = self.keys.get(&version).ok_or_else(|| {
                    Error::internal(format!(
                        "stored content needs data key version {version}, which the tenant does not have"
                    ))
                })?;
                let (header, sealed) = bytes.split_at(HEADER_LEN);
                cipher.open(key, &associated_data(self.tenant, slot, header), sealed)?
            }
            Some((format, _)) => {
                return Err(Error::internal(format!(
                    "unknown stored content format {format}"
                )));
            }
            None => return Err(Error::internal("stored content is empty")),
        };
        String::from_utf8(text).map_err(|_| Error::internal("stored content is not UTF-8"))
    }
}

/// The data key version a stored value is sealed with (`None`: plain).
pub(crate) fn version_of(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [SEALED, a, b, c, d, ..] if bytes.len() > HEADER_LEN => {
            Some(u32::from_be_bytes([*a, *b, *c, *d]))
        }
        _ => None,
    }
}

/// `karen content v1 \0 tenant(16) table \0 column \0 row(16) header(5)`.
fn associated_data(tenant: TenantId, slot: Slot, header: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(96);
    ad.extend_from_slice(b"karen content v1\0");
    ad.extend_from_slice(tenant.as_uuid().as_bytes());
    ad.extend_from_slice(slot.table.as_bytes());
    ad.push(0);
    ad.extend_from_slice(slot.column.as_bytes());
    ad.push(0);
    ad.extend_from_slice(slot.row.as_bytes());
    ad.extend_from_slice(header);
    ad
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A test cipher (XOR with the key's first byte, nothing bound): enough to
    /// check the framing; the AEAD itself is tested in karen-crypto.
    struct Xor;
    impl DataCipher for Xor {
        fn generate_key(&self) -> Result<DataKey, Error> {
            Ok(DataKey::from_bytes([7; 32]))
        }
        fn seal(&self, key: &DataKey, ad: &[u8], plain: &[u8]) -> Result<Vec<u8>, Error> {
            let mut out = vec![ad.len() as u8];
            out.extend(plain.iter().map(|b| b ^ key.expose()[0]));
            Ok(out)
        }
        fn open(&self, key: &DataKey, ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
            if sealed.first() != Some(&(ad.len() as u8)) {
                return Err(Error::internal("ad"));
            }
            Ok(sealed[1..].iter().map(|b| b ^ key.expose()[0]).collect())
        }
    }

    #[test]
    fn plain_round_trip() {
        let tenant = TenantId::generate();
        let ring = KeyRing::plain(tenant);
        let slot = Slot::new("messages", "content", Uuid::nil());
        let sealed = ring.seal(slot, "héllo\nworld").unwrap();
        assert_eq!(sealed[0], PLAIN);
        assert_eq!(ring.open(slot, &sealed).unwrap(), "héllo\nworld");
        assert!(ring.open(slot, &[9, 1]).is_err());
        assert!(ring.open(slot, &[]).is_err());
        assert_eq!(version_of(&sealed), None);
    }

    #[test]
    fn sealed_values_carry_their_key_version_and_plain_ones_stay_readable() {
        let tenant = TenantId::generate();
        let keys = HashMap::from([(3, Arc::new(DataKey::from_bytes([5; 32])))]);
        let ring = KeyRing::new(tenant, Arc::new(Xor), keys, Some(3));
        let slot = Slot::new("memories", "content", Uuid::now_v7());
        let sealed = ring.seal(slot, "secret").unwrap();
        assert_eq!(sealed[0], SEALED);
        assert_eq!(version_of(&sealed), Some(3));
        assert_eq!(ring.open(slot, &sealed).unwrap(), "secret");
        let plain = KeyRing::plain(tenant).seal(slot, "old").unwrap();
        assert_eq!(ring.open(slot, &plain).unwrap(), "old");
        // Without the key (or without encryption) it is an error, not garbage.
        assert!(KeyRing::plain(tenant).open(slot, &sealed).is_err());
        let other = KeyRing::new(tenant, Arc::new(Xor), HashMap::new(), None);
        assert!(other.open(slot, &sealed).is_err());
        assert!(other.seal(slot, "x").is_err());
    }
}
