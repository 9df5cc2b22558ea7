//! What every HTTP provider shares: turning transport failures and error
//! statuses into [`LlmError`], reading bodies with a size cap, and parsing
//! `Retry-After`.

use std::error::Error as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use karen_domain::ports::LlmError;
use reqwest::header::{DATE, HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::policy::PolicyViolation;

/// The largest response body read into memory (a whole completion or a
/// batch of embeddings); anything bigger is refused rather than buffered.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// How much of an upstream error body is read, and how much of its message kept.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
const MAX_ERROR_MESSAGE_CHARS: usize = 300;

/// Adds the W3C `traceparent` (and `tracestate`) of the current span, so the
/// upstream's own spans join the caller's trace. Nothing is added when no
/// trace is being recorded.
pub(crate) fn with_trace_context(request: RequestBuilder) -> RequestBuilder {
    use opentelemetry::propagation::{Injector, TextMapPropagator as _};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    struct Headers(HeaderMap);
    impl Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(key.as_bytes()),
                reqwest::header::HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }
    let context = tracing::Span::current().context();
    let mut headers = Headers(HeaderMap::new());
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&context, &mut headers);
    request.headers(headers.0)
}

/// Maps a reqwest failure to the routing terms of [`LlmError`].
pub(crate) fn transport_error(error: reqwest::Error) -> LlmError {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(violation) = cause.downcast_ref::<PolicyViolation>() {
            return LlmError::Refused(violation.to_string());
        }
        source = cause.source();
    }
    if error.is_timeout() {
        return LlmError::Timeout;
    }
    if error.is_decode() {
        return LlmError::InvalidResponse(describe(&error));
    }
    LlmError::Connection(describe(&error))
}

/// The error and its causes on one line, without the URL (it is in the
/// provider's configuration already, and logs should not repeat it).
fn describe(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        let kind = if error.is_connect() {
            "connection failed"
        } else if error.is_body() {
            "the response body broke off"
        } else {
            "request failed"
        };
        return kind.to_owned();
    }
    parts.dedup();
    parts.join(": ")
}

/// Reads a whole body, refusing one larger than `limit` bytes.
pub(crate) async fn read_body(mut response: Response, limit: usize) -> Result<Bytes, LlmError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > limit {
            return Err(LlmError::InvalidResponse(format!(
                "the response is larger than {} MiB",
                limit / (1024 * 1024)
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads and parses a successful JSON response.
pub(crate) async fn read_json<T: DeserializeOwned>(response: Response) -> Result<T, LlmError> {
    let body = read_body(response, MAX_BODY_BYTES).await?;
    serde_json::from_slice(&body).map_err(|error| {
        LlmError::InvalidResponse(format!("the response is not the expected JSON: {error}"))
    })
}

/// Turns a non-success response into an error: 429 becomes
/// [`LlmError::RateLimited`] with its `Retry-After`, anything else
/// [`LlmError::Upstream`] with the vendor's message. `api_key` is scrubbed
/// from the message, since some vendors quote the key they rejected.
pub(crate) async fn status_error(
    response: Response,
    now: OffsetDateTime,
    api_key: Option<&SecretString>,
) -> LlmError {
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return LlmError::RateLimited {
            retry_after: retry_after(response.headers(), now),
        };
    }
    let body = read_body(response, MAX_ERROR_BODY_BYTES)
        .await
        .unwrap_or_default();
    let mut message = error_message(&body);
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_owned();
    }
    if let Some(key) = api_key.map(ExposeSecret::expose_secret)
        && !key.is_empty()
    {
        message = message.replace(key, "[redacted]");
    }
    LlmError::Upstream {
        status: status.as_u16(),
        message: truncate(&message, MAX_ERROR_MESSAGE_CHARS),
    }
}

/// The human-readable message of an error body: OpenAI's and Anthropic's
/// `{"error": {"message": …}}`, Ollama's `{"error": "…"}`, a top-level
/// `message`, or else the body text itself.
pub(crate) fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let candidates = [
            value.pointer("/error/message"),
            value.get("error"),
            value.get("message"),
            value.get("detail"),
        ];
        if let Some(text) = candidates.into_iter().flatten().find_map(|v| v.as_str()) {
            return text.trim().to_owned();
        }
    }
    String::from_utf8_lossy(body).trim().to_owned()
}

/// Cuts `text` to at most `max` characters, marking the cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// How long a 429 asks to wait: `Retry-After` in seconds or as an HTTP date.
/// A date is measured against the response's own `Date` header when there is
/// one (immune to clock skew between us and the vendor), else against `now`.
pub(crate) fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = OffsetDateTime::from(httpdate::parse_http_date(value).ok()?);
    let reference = headers
        .get(DATE)
        .and_then(|date| date.to_str().ok())
        .and_then(|date| httpdate::parse_http_date(date).ok())
        .map(OffsetDateTime::from)
        .unwrap_or(now);
    let wait = at - reference;
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use time::macros::datetime;

    use super::*;

    fn headers(pairs: &[(reqwest::header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_in_seconds() {
        let now = datetime!(2026-01-01 0:00 UTC);
        let map = headers(&[(RETRY_AFTER, "7")]);
        assert_eq!(retry_after(&map, now), Some(Duration::from_secs(7)));
        let map = headers(&[(RETRY_AFTER, "0.5")]);
        assert_eq!(retry_after(&map, now), Some(Duration::from_millis(500)));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        assert_eq!(retry_after(&headers(&[(RETRY_AFTER, "soon")]), now), None);
    }

    #[test]
    fn retry_after_as_http_date_against_the_clock() {
        let now = datetime!(2026-01-01 12:00:00 UTC);
        let map = headers(&[(RETRY_AFTER, "Thu, 01 Jan 2026 12:00:30 GMT")]);
        assert_eq!(retry_after(&map, now), Some(Duration::from_secs(30)));
        // A date in the past means "now".
        let map = headers(&[(RETRY_AFTER, "Thu, 01 Jan 2026 11:00:00 GMT")]);
        assert_eq!(retry_after(&map, now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_as_http_date_against_the_response_date() {
        let now = datetime!(2030-06-01 0:00 UTC);
        let map = headers(&[
            (RETRY_AFTER, "Thu, 01 Jan 2026 12:01:00 GMT"),
            (DATE, "Thu, 01 Jan 2026 12:00:00 GMT"),
        ]);
        assert_eq!(retry_after(&map, now), Some(Duration::from_secs(60)));
    }

    #[test]
    fn error_messages_of_known_vendors() {
        let openai = br#"{"error":{"message":"Rate limit reached","type":"requests"}}"#;
        assert_eq!(error_message(openai), "Rate limit reached");
        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(error_message(anthropic), "Overloaded");
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(b"  Bad Gateway \n"), "Bad Gateway");
    }

    #[test]
    fn truncation_keeps_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("short", 10), "short");
    }
}
