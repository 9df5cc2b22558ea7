//! The one place where message content becomes bytes in the store and back.
//! Today it is stored as plain UTF-8 behind a format byte; encryption at rest
//! will add a format (tenant data key, AES-256-GCM) here and nowhere else.

use karen_domain::{Error, TenantId};

/// Format byte: plain UTF-8.
const PLAIN: u8 = 0;

/// Encodes content for storage.
pub(crate) fn seal(_tenant: TenantId, text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.push(PLAIN);
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// Decodes stored content.
pub(crate) fn open(_tenant: TenantId, bytes: &[u8]) -> Result<String, Error> {
    match bytes.split_first() {
        Some((&PLAIN, text)) => String::from_utf8(text.to_vec())
            .map_err(|_| Error::internal("stored message content is not UTF-8")),
        Some((format, _)) => Err(Error::internal(format!(
            "unknown stored content format {format}"
        ))),
        None => Err(Error::internal("stored message content is empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let tenant = TenantId::generate();
        let sealed = seal(tenant, "héllo\nworld");
        assert_eq!(open(tenant, &sealed).unwrap(), "héllo\nworld");
        assert!(open(tenant, &[9, 1]).is_err());
        assert!(open(tenant, &[]).is_err());
    }
}
