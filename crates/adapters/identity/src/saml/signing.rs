//! Enveloped XML signatures as an identity provider makes them, for test
//! identity providers (feature `test-signing`; Karen itself never signs SAML).
//! Canonicalization is the verifier's own exclusive C14N, so what is signed
//! here is byte for byte what the verifier digests.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::c14n::{EXC_C14N, canonicalize};
use super::error::SamlError;
use super::xml::NS_DS;

/// `http://www.w3.org/2001/04/xmldsig-more#rsa-sha256`.
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
/// `http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256`.
pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
/// `http://www.w3.org/2001/04/xmlenc#sha256`.
pub const DIGEST_SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
/// `http://www.w3.org/2000/09/xmldsig#sha1` (for tests that must be refused).
pub const DIGEST_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

/// How [`sign_enveloped_with`] signs; [`Self::new`] is what real IdPs do.
#[derive(Debug, Clone, Copy)]
pub struct SignatureSettings<'a> {
    /// The SignatureMethod URI written (the value itself comes from the signer).
    pub signature_method: &'a str,
    /// [`DIGEST_SHA256`] or [`DIGEST_SHA1`].
    pub digest_method: &'a str,
    /// The Reference URI; `None`: `#` and the signed element's ID.
    pub reference_uri: Option<&'a str>,
    /// A certificate (DER) to put in `ds:KeyInfo`.
    pub key_info_certificate: Option<&'a [u8]>,
}

impl<'a> SignatureSettings<'a> {
    /// `signature_method` over a SHA-256 digest of the element itself.
    #[must_use]
    pub fn new(signature_method: &'a str) -> Self {
        Self {
            signature_method,
            digest_method: DIGEST_SHA256,
            reference_uri: None,
            key_info_certificate: None,
        }
    }
}

/// Signs the element with `ID="{id}"` of `xml` with an enveloped signature
/// (exclusive C14N, SHA-256 digest, `signature_method`), placed right after
/// the element's `saml:Issuer` child as the schema wants. `sign` makes the
/// signature value over the canonical SignedInfo.
pub fn sign_enveloped(
    xml: &str,
    id: &str,
    signature_method: &str,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<String, SamlError> {
    sign_enveloped_with(xml, id, &SignatureSettings::new(signature_method), sign)
}

/// [`sign_enveloped`] with every choice open (tests of refusals use them).
pub fn sign_enveloped_with(
    xml: &str,
    id: &str,
    settings: &SignatureSettings<'_>,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<String, SamlError> {
    let document = roxmltree::Document::parse(xml).map_err(|e| SamlError::Xml(e.to_string()))?;
    let find = |wanted: &str| {
        document
            .descendants()
            .find(|node| node.attribute("ID") == Some(wanted))
            .ok_or(SamlError::Missing {
                what: "element to sign",
            })
    };
    let element = find(id)?;
    // The digest covers the element the Reference names (normally `element`).
    let target = match settings.reference_uri {
        Some(uri) => find(uri.trim_start_matches('#'))?,
        None => element,
    };
    let algorithm = if settings.digest_method == DIGEST_SHA1 {
        &digest::SHA1_FOR_LEGACY_USE_ONLY
    } else {
        &digest::SHA256
    };
    let digest = digest::digest(algorithm, &canonicalize(target, None, &[])?);
    let uri = settings
        .reference_uri
        .map_or_else(|| format!("#{id}"), str::to_owned);
    // Written in canonical form, so these bytes are what is signed.
    let signed_info = format!(
        concat!(
            r#"<ds:SignedInfo xmlns:ds="{ds}">"#,
            r#"<ds:CanonicalizationMethod Algorithm="{c14n}"></ds:CanonicalizationMethod>"#,
            r#"<ds:SignatureMethod Algorithm="{method}"></ds:SignatureMethod>"#,
            r#"<ds:Reference URI="{uri}"><ds:Transforms>"#,
            r#"<ds:Transform Algorithm="{enveloped}"></ds:Transform>"#,
            r#"<ds:Transform Algorithm="{c14n}"></ds:Transform>"#,
            r#"</ds:Transforms><ds:DigestMethod Algorithm="{digest_method}"></ds:DigestMethod>"#,
            r#"<ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo>"#
        ),
        ds = NS_DS,
        c14n = EXC_C14N,
        method = settings.signature_method,
        uri = uri,
        enveloped = ENVELOPED,
        digest_method = settings.digest_method,
        digest = STANDARD.encode(digest.as_ref()),
    );
    let value = STANDARD.encode(sign(signed_info.as_bytes()));
    let key_info = settings
        .key_info_certificate
        .map(|der| {
            format!(
                "<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>",
                STANDARD.encode(der)
            )
        })
        .unwrap_or_default();
    let signature = format!(
        r#"<ds:Signature xmlns:ds="{NS_DS}">{signed_info}<ds:SignatureValue>{value}</ds:SignatureValue>{key_info}</ds:Signature>"#
    );
    let start = element.range().start;
    let close = "</saml:Issuer>";
    let issuer_end = xml[start..]
        .find(close)
        .map(|at| start + at + close.len())
        .ok_or(SamlError::Missing { what: "Issuer" })?;
    Ok(format!(
        "{}{}{}",
        &xml[..issuer_end],
        signature,
        &xml[issuer_end..]
    ))
}
