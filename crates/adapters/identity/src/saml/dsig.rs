//! Verification of one enveloped XML signature (XML-DSig) against the
//! configured identity-provider certificates.
//!
//! Deliberately narrow; anything else is refused:
//! - the `ds:Signature` is a child of the element it signs, and its single
//!   `ds:Reference` names that element (`URI="#<its ID>"`);
//! - transforms: enveloped-signature then exclusive C14N (optionally with
//!   InclusiveNamespaces), SignedInfo canonicalized with exclusive C14N;
//! - RSA PKCS#1 v1.5 or ECDSA (P-256, P-384) with SHA-256/384/512 and digests
//!   SHA-256/384/512. SHA-1 is refused;
//! - the key is one of the configured certificates, never `ds:KeyInfo`
//!   (which is not even read).

use aws_lc_rs::{digest, signature};
use roxmltree::Node;

use super::c14n::{EXC_C14N, canonicalize};
use super::error::SamlError;
use super::xml::{
    NS_DS, NS_EXC_C14N, child_elements, decode_base64, is, optional_child, required_child,
    trimmed_text,
};

const ENVELOPED_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

#[derive(Clone, Copy)]
enum KeyKind {
    Rsa,
    Ecdsa,
}

/// Verifies `signature_node` (a `ds:Signature`) and returns the element it
/// covers: its parent. Only what that element contains may be trusted.
pub(crate) fn verify_enveloped<'a, 'input>(
    signature_node: Node<'a, 'input>,
    certificates: &[Vec<u8>],
) -> Result<Node<'a, 'input>, SamlError> {
    let signed = signature_node
        .parent_element()
        .ok_or(SamlError::SignatureReference)?;
    for child in signature_node.children() {
        if child.is_text() && !is_whitespace(child.text().unwrap_or_default()) {
            return Err(SamlError::Invalid { what: "Signature" });
        }
        if child.is_element()
            && !(is(child, NS_DS, "SignedInfo")
                || is(child, NS_DS, "SignatureValue")
                || is(child, NS_DS, "KeyInfo"))
        {
            return Err(SamlError::Unsupported {
                what: "a Signature element other than SignedInfo, SignatureValue and KeyInfo",
            });
        }
    }
    let signed_info = required_child(signature_node, NS_DS, "SignedInfo", "SignedInfo")?;
    let signature_value = decode_base64(&trimmed_text(
        required_child(signature_node, NS_DS, "SignatureValue", "SignatureValue")?,
        "SignatureValue",
    )?)?;

    let mut canonicalization = None;
    let mut signature_method = None;
    let mut references = Vec::new();
    for child in child_elements(signed_info) {
        if is(child, NS_DS, "CanonicalizationMethod") && canonicalization.is_none() {
            canonicalization = Some(child);
        } else if is(child, NS_DS, "SignatureMethod") && signature_method.is_none() {
            signature_method = Some(child);
        } else if is(child, NS_DS, "Reference") {
            references.push(child);
        } else {
            return Err(SamlError::Invalid { what: "SignedInfo" });
        }
    }
    let canonicalization = canonicalization.ok_or(SamlError::Missing {
        what: "CanonicalizationMethod",
    })?;
    let signature_method = signature_method.ok_or(SamlError::Missing {
        what: "SignatureMethod",
    })?;
    let [reference] = references.as_slice() else {
        return Err(SamlError::Invalid {
            what: "Reference count (exactly one is accepted)",
        });
    };

    // The reference must name the enveloping element, by its ID.
    let uri = reference.attribute("URI").unwrap_or_default();
    let signed_id = signed
        .attribute("ID")
        .ok_or(SamlError::SignatureReference)?;
    if uri.strip_prefix('#') != Some(signed_id) || signed_id.is_empty() {
        return Err(SamlError::SignatureReference);
    }

    let signed_info_prefixes = c14n_method(canonicalization)?;
    let (key_kind, algorithms) = signature_algorithm(signature_method)?;
    let reference_prefixes = reference_transforms(*reference)?;
    let digest_algorithm = digest_algorithm(required_child(
        *reference,
        NS_DS,
        "DigestMethod",
        "DigestMethod",
    )?)?;
    let digest_value = decode_base64(&trimmed_text(
        required_child(*reference, NS_DS, "DigestValue", "DigestValue")?,
        "DigestValue",
    )?)?;

    // First the signature over SignedInfo: it vouches for the digest.
    let signed_info_bytes = canonicalize(signed_info, None, &signed_info_prefixes)?;
    verify_with_any_certificate(
        certificates,
        key_kind,
        algorithms,
        &signed_info_bytes,
        &signature_value,
    )?;
    // Then the digest of the signed element, this signature left out.
    let element_bytes = canonicalize(signed, Some(signature_node.id()), &reference_prefixes)?;
    let computed = digest::digest(digest_algorithm, &element_bytes);
    if aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_ref(), &digest_value).is_err()
    {
        return Err(SamlError::DigestMismatch);
    }
    Ok(signed)
}

fn is_whitespace(text: &str) -> bool {
    text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// Checks a canonicalization method and returns its InclusiveNamespaces.
fn c14n_method(method: Node<'_, '_>) -> Result<Vec<String>, SamlError> {
    let algorithm = method.attribute("Algorithm").unwrap_or_default();
    if algorithm != EXC_C14N {
        return Err(SamlError::WeakOrUnknownAlgorithm(shorten(algorithm)));
    }
    let mut prefixes = Vec::new();
    for child in child_elements(method) {
        if !is(child, NS_EXC_C14N, "InclusiveNamespaces") {
            return Err(SamlError::Invalid {
                what: "canonicalization parameters",
            });
        }
        let list = child.attribute("PrefixList").unwrap_or_default();
        prefixes.extend(list.split_ascii_whitespace().map(str::to_owned));
    }
    Ok(prefixes)
}

/// Transforms must be exactly enveloped-signature, then exclusive C14N.
fn reference_transforms(reference: Node<'_, '_>) -> Result<Vec<String>, SamlError> {
    for child in child_elements(reference) {
        if !(is(child, NS_DS, "Transforms")
            || is(child, NS_DS, "DigestMethod")
            || is(child, NS_DS, "DigestValue"))
        {
            return Err(SamlError::Invalid { what: "Reference" });
        }
    }
    let transforms = optional_child(reference, NS_DS, "Transforms", "Transforms")?
        .ok_or(SamlError::Missing { what: "Transforms" })?;
    let list: Vec<Node<'_, '_>> = child_elements(transforms).collect();
    let [enveloped, exclusive] = list.as_slice() else {
        return Err(SamlError::Unsupported {
            what: "a transform chain other than enveloped-signature + exclusive C14N",
        });
    };
    if !is(*enveloped, NS_DS, "Transform")
        || !is(*exclusive, NS_DS, "Transform")
        || enveloped.attribute("Algorithm") != Some(ENVELOPED_SIGNATURE)
        || child_elements(*enveloped).next().is_some()
    {
        return Err(SamlError::Unsupported {
            what: "a transform chain other than enveloped-signature + exclusive C14N",
        });
    }
    c14n_method(*exclusive)
}

fn signature_algorithm(
    method: Node<'_, '_>,
) -> Result<(KeyKind, &'static dyn signature::VerificationAlgorithm), SamlError> {
    if child_elements(method).next().is_some() {
        // HMACOutputLength and friends.
        return Err(SamlError::Invalid {
            what: "SignatureMethod parameters",
        });
    }
    let algorithm = method.attribute("Algorithm").unwrap_or_default();
    let chosen: (KeyKind, &'static dyn signature::VerificationAlgorithm) = match algorithm {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => {
            (KeyKind::Rsa, &signature::RSA_PKCS1_2048_8192_SHA256)
        }
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384" => {
            (KeyKind::Rsa, &signature::RSA_PKCS1_2048_8192_SHA384)
        }
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => {
            (KeyKind::Rsa, &signature::RSA_PKCS1_2048_8192_SHA512)
        }
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" => {
            (KeyKind::Ecdsa, &signature::ECDSA_P256_SHA256_FIXED)
        }
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384" => {
            (KeyKind::Ecdsa, &signature::ECDSA_P384_SHA384_FIXED)
        }
        other => return Err(SamlError::WeakOrUnknownAlgorithm(shorten(other))),
    };
    Ok(chosen)
}

fn digest_algorithm(method: Node<'_, '_>) -> Result<&'static digest::Algorithm, SamlError> {
    match method.attribute("Algorithm").unwrap_or_default() {
        "http://www.w3.org/2001/04/xmlenc#sha256" => Ok(&digest::SHA256),
        "http://www.w3.org/2001/04/xmldsig-more#sha384" => Ok(&digest::SHA384),
        "http://www.w3.org/2001/04/xmlenc#sha512" => Ok(&digest::SHA512),
        other => Err(SamlError::WeakOrUnknownAlgorithm(shorten(other))),
    }
}

fn verify_with_any_certificate(
    certificates: &[Vec<u8>],
    kind: KeyKind,
    algorithm: &'static dyn signature::VerificationAlgorithm,
    message: &[u8],
    signature_value: &[u8],
) -> Result<(), SamlError> {
    for der in certificates {
        let Ok(key) = public_key(der) else { continue };
        let matches_kind = matches!(
            (kind, &key),
            (KeyKind::Rsa, CertificateKey::Rsa(_)) | (KeyKind::Ecdsa, CertificateKey::Ec(_))
        );
        if !matches_kind {
            continue;
        }
        let bytes = match &key {
            CertificateKey::Rsa(bytes) | CertificateKey::Ec(bytes) => bytes,
        };
        if signature::UnparsedPublicKey::new(algorithm, bytes)
            .verify(message, signature_value)
            .is_ok()
        {
            return Ok(());
        }
    }
    Err(SamlError::BadSignature)
}

/// The public key of a certificate: PKCS#1 RSAPublicKey or an EC point.
pub(crate) enum CertificateKey {
    Rsa(Vec<u8>),
    Ec(Vec<u8>),
}

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

/// Parses a DER certificate and returns its RSA or EC public key.
pub(crate) fn public_key(der: &[u8]) -> Result<CertificateKey, SamlError> {
    let (rest, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| SamlError::Certificate("not a DER X.509 certificate"))?;
    if !rest.is_empty() {
        return Err(SamlError::Certificate(
            "trailing bytes after the certificate",
        ));
    }
    let spki = certificate.public_key();
    let key = spki.subject_public_key.data.to_vec();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        OID_RSA_ENCRYPTION => Ok(CertificateKey::Rsa(key)),
        OID_EC_PUBLIC_KEY => Ok(CertificateKey::Ec(key)),
        _ => Err(SamlError::Certificate("the key is neither RSA nor EC")),
    }
}

/// An algorithm URI cut to a loggable length.
fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}
