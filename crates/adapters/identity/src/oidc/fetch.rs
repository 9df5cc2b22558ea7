//! The two kinds of request to a provider: reading a JSON document
//! (discovery, key set) and the code exchange at the token endpoint. Bodies
//! are capped; a redirect is an error, never followed.

use std::error::Error as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use karen_domain::ports::{CodeRedemption, OidcError};
use karen_domain::sso::SsoFailure;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;
use url::form_urlencoded;

use super::{Discovery, OidcHttpClient, rejected};

/// The largest document read from a provider.
const MAX_BODY_BYTES: usize = 512 * 1024;

/// `scheme://host:port` of a URL (never its path or query).
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// A transport failure, with its causes (the SSRF refusal among them).
fn transport(error: &reqwest::Error, what: &str, url: &Url) -> OidcError {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.dedup();
    let detail = if causes.is_empty() {
        "the request failed".to_owned()
    } else {
        causes.join(": ")
    };
    if detail.contains("outbound policy") {
        return OidcError::Refused(format!("{what} at {}: {detail}", origin(url)));
    }
    OidcError::Provider(format!(
        "{what} at {} could not be read: {detail}",
        origin(url)
    ))
}

async fn send(
    client: &OidcHttpClient,
    request: reqwest::RequestBuilder,
    what: &str,
    url: &Url,
) -> Result<(reqwest::StatusCode, Vec<u8>), OidcError> {
    let response = tokio::time::timeout(client.request_timeout, request.send())
        .await
        .map_err(|_| OidcError::Provider(format!("{what} at {} timed out", origin(url))))?
        .map_err(|error| transport(&error, what, url))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(OidcError::Provider(format!(
            "{what} at {} answered with a redirect ({status}); redirects are not followed, configure the final URL",
            origin(url)
        )));
    }
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = tokio::time::timeout(client.request_timeout, response.chunk())
        .await
        .map_err(|_| OidcError::Provider(format!("{what} at {} timed out", origin(url))))?
        .map_err(|error| transport(&error, what, url))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(OidcError::Provider(format!(
                "{what} at {} is larger than {} KiB",
                origin(url),
                MAX_BODY_BYTES / 1024
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// Reads a JSON document.
pub(crate) async fn get_json<T: DeserializeOwned>(
    client: &OidcHttpClient,
    url: &Url,
    what: &str,
) -> Result<T, OidcError> {
    let request = client
        .http
        .get(url.clone())
        .header(ACCEPT, "application/json");
    let (status, body) = send(client, request, what, url).await?;
    if !status.is_success() {
        return Err(OidcError::Provider(format!(
            "{what} at {} answered {status}",
            origin(url)
        )));
    }
    serde_json::from_slice(&body).map_err(|error| {
        OidcError::Provider(format!(
            "{what} at {} is not the expected JSON: {error}",
            origin(url)
        ))
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: Option<String>,
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded before Basic.
fn basic_credentials(client_id: &str, secret: &SecretString) -> String {
    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret.expose_secret()));
    format!("Basic {}", STANDARD.encode(pair))
}

/// Exchanges the authorization code (with the PKCE verifier) for the ID token.
pub(crate) async fn exchange_code(
    client: &OidcHttpClient,
    discovery: &Discovery,
    redemption: &CodeRedemption<'_>,
) -> Result<SecretString, OidcError> {
    let endpoint = client.endpoint(&discovery.token_endpoint, "the token endpoint")?;
    let url = endpoint.url().clone();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", redemption.code)
        .append_pair("redirect_uri", redemption.redirect_uri)
        .append_pair("client_id", redemption.client_id)
        .append_pair("code_verifier", redemption.code_verifier.expose_secret())
        .finish();
    let request = client
        .http
        .post(url.clone())
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(
            AUTHORIZATION,
            basic_credentials(redemption.client_id, redemption.client_secret),
        )
        .body(body);
    let (status, body) = send(client, request, "the token endpoint", &url).await?;
    if status.is_client_error() {
        // invalid_grant (bad or reused code, PKCE mismatch), invalid_client…
        let error = serde_json::from_slice::<TokenError>(&body)
            .ok()
            .and_then(|e| e.error)
            .unwrap_or_else(|| status.to_string());
        tracing::info!(
            error = %karen_domain::values::printable(&error, 60),
            "the token endpoint refused the code"
        );
        return Err(rejected(SsoFailure::CodeExchange));
    }
    if !status.is_success() {
        return Err(OidcError::Provider(format!(
            "the token endpoint at {} answered {status}",
            origin(&url)
        )));
    }
    let response: TokenResponse = serde_json::from_slice(&body).map_err(|error| {
        OidcError::Provider(format!(
            "the token endpoint's answer is not the expected JSON: {error}"
        ))
    })?;
    response
        .id_token
        .map(SecretString::from)
        .ok_or(rejected(SsoFailure::Claims))
}
