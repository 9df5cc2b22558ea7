//! Codes of an authenticator app, computed the way the server checks them.

/// The code an authenticator app with the base32 `secret` shows at `at`.
pub fn totp_code(secret: &str, at: time::OffsetDateTime) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret).expect("a base32 TOTP secret");
    let authenticator = totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .expect("RFC 6238 parameters");
    authenticator
        .generate(u64::try_from(at.unix_timestamp()).expect("a time after 1970"))
        .to_string()
}
