//! Why a SAML message, metadata document or configuration was refused.

/// Every refusal of the SAML core, with a stable code for logs and problem+json.
///
/// Messages never echo the attacker-controlled content of the message (names,
/// audiences, identifiers): only what check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SamlError {
    #[error("the SAML message is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the SAML message is not valid base64")]
    Base64,
    #[error("the SAML message is not UTF-8 text")]
    NotUtf8,
    #[error("document type declarations (DTD, entities) are refused")]
    DtdForbidden,
    #[error("processing instructions are refused")]
    ProcessingInstructionForbidden,
    #[error("the XML is nested more than {limit} elements deep")]
    TooDeep { limit: usize },
    #[error("the XML is not well-formed: {0}")]
    Xml(String),
    #[error("the XML is not a {expected}")]
    UnexpectedRoot { expected: &'static str },
    #[error("two elements carry the same ID")]
    DuplicateId,
    #[error("invalid {what}")]
    Invalid { what: &'static str },
    #[error("missing {what}")]
    Missing { what: &'static str },
    #[error("more than one {what}")]
    Duplicate { what: &'static str },
    #[error("the SAML version is not 2.0")]
    Version,
    #[error("the identity provider answered with status {0}")]
    Status(String),
    #[error(
        "encrypted assertions are not supported: configure the identity provider to sign, not encrypt"
    )]
    EncryptedAssertionUnsupported,
    #[error("{what} is not supported")]
    Unsupported { what: &'static str },
    #[error("the response must contain exactly one assertion, as a child of the Response")]
    AssertionCount,
    #[error("the assertion is not covered by a signature")]
    Unsigned,
    #[error("the signature does not reference the element that contains it")]
    SignatureReference,
    #[error("signature algorithm {0} is not accepted (SHA-1 and unknown algorithms are refused)")]
    WeakOrUnknownAlgorithm(String),
    #[error("the digest of the signed element does not match")]
    DigestMismatch,
    #[error("the signature was not made by a configured identity provider certificate")]
    BadSignature,
    #[error("invalid certificate: {0}")]
    Certificate(&'static str),
    #[error("the issuer is not the configured identity provider")]
    Issuer,
    #[error("the Destination is not this service provider's assertion consumer URL")]
    Destination,
    #[error(
        "the bearer confirmation's Recipient is not this service provider's assertion consumer URL"
    )]
    Recipient,
    #[error("InResponseTo does not match the pending request")]
    InResponseTo,
    #[error("the service provider is not in the assertion's audience")]
    Audience,
    #[error("the assertion is not valid yet")]
    NotYetValid,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion has no bearer subject confirmation")]
    NoBearerConfirmation,
}

impl SamlError {
    /// A stable, machine-readable code (`saml_…`).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "saml_too_large",
            Self::Base64 | Self::NotUtf8 | Self::Xml(_) | Self::TooDeep { .. } => "saml_malformed",
            Self::DtdForbidden => "saml_dtd_forbidden",
            Self::ProcessingInstructionForbidden => "saml_pi_forbidden",
            Self::UnexpectedRoot { .. } => "saml_unexpected_document",
            Self::DuplicateId => "saml_duplicate_id",
            Self::Invalid { .. } | Self::Missing { .. } | Self::Duplicate { .. } => "saml_invalid",
            Self::Version => "saml_version",
            Self::Status(_) => "saml_status",
            Self::EncryptedAssertionUnsupported => "saml_encrypted_assertion_unsupported",
            Self::Unsupported { .. } => "saml_unsupported",
            Self::AssertionCount => "saml_assertion_count",
            Self::Unsigned => "saml_unsigned",
            Self::SignatureReference => "saml_signature_reference",
            Self::WeakOrUnknownAlgorithm(_) => "saml_algorithm",
            Self::DigestMismatch => "saml_digest_mismatch",
            Self::BadSignature => "saml_bad_signature",
            Self::Certificate(_) => "saml_certificate",
            Self::Issuer => "saml_issuer",
            Self::Destination => "saml_destination",
            Self::Recipient => "saml_recipient",
            Self::InResponseTo => "saml_in_response_to",
            Self::Audience => "saml_audience",
            Self::NotYetValid => "saml_not_yet_valid",
            Self::Expired => "saml_expired",
            Self::NoBearerConfirmation => "saml_no_bearer_confirmation",
        }
    }
}
