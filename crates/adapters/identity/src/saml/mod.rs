//! SAML 2.0 service provider: the protocol core of SAML single sign-on.
//!
//! - [`parse_idp_metadata`] / [`IdpConfig::from_pem`]: the identity provider
//!   a tenant trusts (entity ID, SSO URLs, signing certificates);
//! - [`sp_metadata`]: our metadata for the IdP's administrator;
//! - [`authn_request`]: the SP-initiated request, as an HTTP-Redirect URL
//!   (raw DEFLATE, base64, URL-encoded, with RelayState) and an HTTP-POST
//!   auto-submitting form;
//! - [`validate_response`]: the ACS side: checks a `SAMLResponse` and returns
//!   a [`VerifiedAssertion`].
//!
//! Nothing here stores state. **The caller keeps a replay cache**: the
//! [`VerifiedAssertion::assertion_id`] of every accepted assertion until its
//! [`VerifiedAssertion::not_on_or_after`] plus the clock skew, and refuses an
//! assertion seen before. The caller also keeps the AuthnRequest's ID with
//! the browser session and passes it as [`Expectations::in_response_to`].
//!
//! # Why our own signature verification
//!
//! SAML's security rests on XML-DSig, whose classic failure is signature
//! wrapping: a verifier checks *some* signed element while the application
//! reads *another* one. The candidates were weighed as follows:
//! - `samael` verifies signatures only with its `xmlsec` feature: bindings to
//!   libxmlsec1, libxml2 and OpenSSL. Our dependency policy bans the
//!   `openssl` crates (one TLS/crypto stack: rustls over aws-lc-rs), and
//!   xmlsec's verify-something-in-the-document API is exactly the shape that
//!   invites wrapping unless the caller re-finds the signed node itself.
//! - `saml-rs` (pure Rust, pre-1.0, unaudited) delegates XML security to
//!   `bergshamra`: a general XML-Sec stack (XPath, XML-Enc, every C14N
//!   variant, RustCrypto RSA, its own XML parser), far more code and
//!   dependencies than SAML needs on our 2-core builds, and as unaudited as
//!   our own code would be, with a bigger attack surface.
//! - Here: `roxmltree` (small, refuses DTDs, keeps source positions), our
//!   exclusive C14N of the signed subtree (~250 lines, the only algorithm
//!   accepted), and `aws-lc-rs`, the workspace's crypto provider, for
//!   RSA-SHA256/384/512 and ECDSA P-256/P-384. The verifier returns the very
//!   node it digested, and only that node is read. It is proven against an
//!   independent signer (a response signed by the `xmlsec1` tool is a test
//!   fixture).
//!
//! # How attacks are refused
//!
//! - **Signature wrapping**: the document must hold exactly one
//!   `saml:Assertion` (anywhere, including Extensions, `ds:Object`, Advice),
//!   a child of the Response; the signature must be a child of the element it
//!   signs and its single Reference must name that element's ID; the verifier
//!   returns that node and the data is read from it (an assertion-level
//!   signature) or from its only Assertion child (a response-level one).
//!   Duplicate IDs (`ID`, `Id`, `id`, `AssertionID`) anywhere are refused.
//! - **Key substitution**: `ds:KeyInfo` is never read; only the configured
//!   certificates' keys are tried.
//! - **Weak algorithms**: SHA-1 (digest or signature), HMAC, RSA keys under
//!   2048 bits, inclusive or with-comments C14N, XPath/XSLT transforms are
//!   refused.
//! - **Comment truncation** (`admin@evil.test<!---->.attacker.test`): text
//!   is read as all text children joined, which is exactly what is signed.
//! - **XXE, billion laughs**: any DTD is refused; documents are limited in
//!   size, node count and depth; processing instructions are refused.
//! - **Encrypted assertions** are refused with
//!   [`SamlError::EncryptedAssertionUnsupported`] (not supported yet).

mod assertion;
mod c14n;
mod config;
mod dsig;
mod error;
mod metadata;
mod port;
mod request;
mod response;
#[cfg(any(test, feature = "test-signing"))]
pub mod signing;
mod xml;

#[cfg(test)]
mod tests;

pub use config::{
    BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, IdpConfig, NAMEID_FORMAT_EMAIL,
    NAMEID_FORMAT_UNSPECIFIED, SpConfig, SsoBinding, certificates_from_pem,
};
pub use error::SamlError;
pub use metadata::{parse_idp_metadata, sp_metadata};
pub use port::SamlCore;
pub use request::{
    AuthnRequest, MAX_RELAY_STATE_BYTES, PostBinding, authn_request, new_request_id,
};
pub use response::{
    DEFAULT_CLOCK_SKEW, Expectations, MAX_SAML_RESPONSE_BASE64_BYTES, VerifiedAssertion,
    validate_response, validate_response_xml,
};
pub use xml::MAX_XML_BYTES;
