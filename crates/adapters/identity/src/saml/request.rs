//! The SP-initiated start of a sign-in: an unsigned `samlp:AuthnRequest`,
//! carried by HTTP-Redirect or HTTP-POST.

use std::io::Write as _;

use base64::Engine as _;
use time::OffsetDateTime;

use super::config::{BINDING_HTTP_POST, IdpConfig, SpConfig, check_http_url};
use super::error::SamlError;
use super::xml::escape;

/// RelayState may be at most 80 bytes (SAML bindings, 3.4.3 and 3.5.3).
pub const MAX_RELAY_STATE_BYTES: usize = 80;

/// An AuthnRequest ready to send, in each binding the IdP offers.
///
/// Keep [`AuthnRequest::id`] with the browser session (e.g. in a signed,
/// short-lived cookie): the response must answer it (`InResponseTo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnRequest {
    /// The request's ID, to pass as `Expectations::in_response_to`.
    pub id: String,
    /// The request XML (for logs and tests; it holds no secret).
    pub xml: String,
    /// HTTP-Redirect binding: the URL to send the browser to (303/302).
    pub redirect_url: Option<String>,
    /// HTTP-POST binding: a form for the browser to post.
    pub post: Option<PostBinding>,
}

/// The HTTP-POST binding of an AuthnRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostBinding {
    /// Where the form posts: the IdP's HTTP-POST SingleSignOnService.
    pub action: String,
    /// The `SAMLRequest` field: base64 of the request XML.
    pub saml_request: String,
    /// The `RelayState` field.
    pub relay_state: Option<String>,
}

impl PostBinding {
    /// An HTML page whose form posts itself. Every value is escaped. With a
    /// CSP nonce the submitting script carries it (`script-src 'nonce-…'`);
    /// without JavaScript a button submits the form.
    #[must_use]
    pub fn html(&self, csp_nonce: Option<&str>) -> String {
        let nonce = csp_nonce
            .map(|nonce| format!(r#" nonce="{}""#, escape(nonce)))
            .unwrap_or_default();
        let relay_state = self
            .relay_state
            .as_deref()
            .map(|state| {
                format!(
                    r#"<input type="hidden" name="RelayState" value="{}"/>"#,
                    escape(state)
                )
            })
            .unwrap_or_default();
        format!(
            concat!(
                "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Signing in…</title></head>",
                "<body><form method=\"post\" action=\"{action}\">",
                "<input type=\"hidden\" name=\"SAMLRequest\" value=\"{request}\"/>{relay_state}",
                "<noscript><button type=\"submit\">Continue to sign in</button></noscript></form>",
                "<script{nonce}>document.forms[0].submit();</script></body></html>\n"
            ),
            action = escape(&self.action),
            request = escape(&self.saml_request),
            relay_state = relay_state,
            nonce = nonce,
        )
    }
}

/// A fresh request ID: `_` and 32 hex digits from the system's secure random
/// generator (an xs:ID must not start with a digit).
pub fn new_request_id() -> Result<String, SamlError> {
    let mut bytes = [0_u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SamlError::Invalid {
        what: "random generator",
    })?;
    let mut id = String::with_capacity(33);
    id.push('_');
    for byte in bytes {
        id.push_str(&format!("{byte:02x}"));
    }
    Ok(id)
}

/// Builds an AuthnRequest from `sp` to `idp`, in the bindings `idp` offers.
///
/// `request_id` must be an xs:ID (letters, digits, `_`, `-`, `.`, not
/// starting with a digit, `-` or `.`); use [`new_request_id`]. `relay_state`
/// (at most 80 bytes) comes back unchanged with the response: an opaque
/// handle, never a URL to redirect to unchecked.
pub fn authn_request(
    sp: &SpConfig,
    idp: &IdpConfig,
    request_id: &str,
    relay_state: Option<&str>,
    now: OffsetDateTime,
) -> Result<AuthnRequest, SamlError> {
    if !is_xs_id(request_id) {
        return Err(SamlError::Invalid { what: "request ID" });
    }
    if relay_state.is_some_and(|state| state.len() > MAX_RELAY_STATE_BYTES) {
        return Err(SamlError::Invalid {
            what: "RelayState (longer than 80 bytes)",
        });
    }
    let destination = idp
        .sso_redirect_url
        .as_deref()
        .or(idp.sso_post_url.as_deref())
        .ok_or(SamlError::Missing {
            what: "IdP single sign-on URL",
        })?;
    let xml = format!(
        concat!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" "#,
            r#"xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" "#,
            r#"IssueInstant="{instant}" Destination="{destination}" "#,
            r#"AssertionConsumerServiceURL="{acs}" ProtocolBinding="{binding}">"#,
            r#"<saml:Issuer>{issuer}</saml:Issuer>"#,
            r#"<samlp:NameIDPolicy Format="{format}" AllowCreate="true"/>"#,
            r#"</samlp:AuthnRequest>"#
        ),
        id = request_id,
        instant = format_instant(now)?,
        destination = escape(destination),
        acs = escape(&sp.acs_url),
        binding = BINDING_HTTP_POST,
        issuer = escape(&sp.entity_id),
        format = escape(&sp.name_id_format),
    );

    let redirect_url = match &idp.sso_redirect_url {
        Some(location) => {
            let mut url = check_http_url(location, "IdP single sign-on URL")?;
            let mut encoder =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            let deflated = encoder
                .write_all(xml.as_bytes())
                .and_then(|()| encoder.finish())
                .map_err(|_| SamlError::Invalid {
                    what: "DEFLATE of the request",
                })?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(deflated);
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("SAMLRequest", &encoded);
                if let Some(state) = relay_state {
                    query.append_pair("RelayState", state);
                }
            }
            Some(url.to_string())
        }
        None => None,
    };
    let post = match &idp.sso_post_url {
        Some(location) => {
            check_http_url(location, "IdP single sign-on URL")?;
            Some(PostBinding {
                action: location.clone(),
                saml_request: base64::engine::general_purpose::STANDARD.encode(xml.as_bytes()),
                relay_state: relay_state.map(str::to_owned),
            })
        }
        None => None,
    };
    Ok(AuthnRequest {
        id: request_id.to_owned(),
        xml,
        redirect_url,
        post,
    })
}

/// An xs:dateTime in UTC with whole seconds: `2026-12-02T21:00:00Z`.
pub(crate) fn format_instant(instant: OffsetDateTime) -> Result<String, SamlError> {
    let utc = instant
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .map_err(|_| SamlError::Invalid { what: "instant" })?;
    utc.format(&time::format_description::well_known::Rfc3339)
        .map_err(|_| SamlError::Invalid { what: "instant" })
}

/// Whether `text` is a plain xs:ID (NCName restricted to ASCII).
fn is_xs_id(text: &str) -> bool {
    let mut characters = text.chars();
    let Some(first) = characters.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && text.len() <= 256
        && characters.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
