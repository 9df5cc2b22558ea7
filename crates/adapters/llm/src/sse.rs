//! Turns a streaming HTTP response (server-sent events) into a
//! [`ChatStream`], with a vendor-specific decoder for the event payloads and
//! an idle timeout between events.
//!
//! The stream owns the response: dropping it closes the connection, which
//! is how a client going away cancels the generation upstream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use karen_domain::ports::{ChatEvent, ChatStream, LlmError};

use crate::http::transport_error;

/// What a decoder made of one server-sent event.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// Events to hand out, in order.
    pub events: Vec<ChatEvent>,
    /// The completion is over; nothing after this event is read.
    pub finished: bool,
}

/// Vendor-specific interpretation of server-sent events.
pub(crate) trait SseDecoder: Send + 'static {
    /// Handles one event.
    fn decode(&mut self, event: &Event) -> Result<Decoded, LlmError>;

    /// The body ended before a terminal event: the events that complete the
    /// stream, or the error that explains why it is incomplete.
    fn end_of_body(&mut self) -> Result<Vec<ChatEvent>, LlmError>;
}

type SseEvents =
    Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

struct Driver<D> {
    events: SseEvents,
    decoder: D,
    pending: VecDeque<ChatEvent>,
    finished: bool,
    idle_timeout: Duration,
    deadline: tokio::time::Instant,
    too_large: std::sync::Arc<std::sync::atomic::AtomicBool>,
    api_key: Option<secrecy::SecretString>,
}

/// An upstream's error text may quote the credential back: never pass it on.
fn redacted(error: LlmError, api_key: Option<&secrecy::SecretString>) -> LlmError {
    use secrecy::ExposeSecret;
    match (error, api_key.map(ExposeSecret::expose_secret)) {
        (LlmError::Upstream { status, message }, Some(key)) if !key.is_empty() => {
            LlmError::Upstream {
                status,
                message: message.replace(key, "[redacted]"),
            }
        }
        (LlmError::InvalidResponse(message), Some(key)) if !key.is_empty() => {
            LlmError::InvalidResponse(message.replace(key, "[redacted]"))
        }
        (error, _) => error,
    }
}

/// The most bytes one streamed answer may take: an upstream (possibly one a
/// tenant configured) must not be able to exhaust the shared process's memory.
pub(crate) const MAX_STREAM_BYTES: usize = 16 * 1024 * 1024;
/// The longest a stream may run, whatever its pace: shorter than the budget
/// reservation's time to live, so a settled call is never also reconciled.
pub(crate) const MAX_STREAM_DURATION: Duration = Duration::from_secs(10 * 60);

/// Streams the events of `response` through `decoder`. After an error the
/// stream ends: a half-read event stream cannot be resumed.
///
/// A JSON response is refused up front: a server that ignored `stream: true`
/// would otherwise look like a connection that broke before its first event.
pub(crate) fn chat_stream<D: SseDecoder>(
    response: reqwest::Response,
    idle_timeout: Duration,
    decoder: D,
    api_key: Option<secrecy::SecretString>,
) -> Result<ChatStream, LlmError> {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        return Err(LlmError::InvalidResponse(
            "a stream was asked for but the upstream answered with JSON".into(),
        ));
    }
    let too_large = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = too_large.clone();
    // The body ends (and the flag says why) once it grows past the cap.
    let bytes = response.bytes_stream().scan(0usize, move |seen, chunk| {
        if let Ok(chunk) = &chunk {
            *seen += chunk.len();
            if *seen > MAX_STREAM_BYTES {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                return futures::future::ready(None);
            }
        }
        futures::future::ready(Some(chunk))
    });
    let driver = Driver {
        events: Box::pin(bytes.eventsource()),
        decoder,
        pending: VecDeque::new(),
        finished: false,
        idle_timeout,
        deadline: tokio::time::Instant::now() + MAX_STREAM_DURATION,
        too_large,
        api_key,
    };
    Ok(Box::pin(futures::stream::unfold(
        driver,
        |mut driver| async move {
            loop {
                if let Some(event) = driver.pending.pop_front() {
                    return Some((Ok(event), driver));
                }
                if driver.finished {
                    return None;
                }
                let wait = driver.idle_timeout.min(
                    driver
                        .deadline
                        .saturating_duration_since(tokio::time::Instant::now()),
                );
                let next = tokio::time::timeout(wait, driver.events.next()).await;
                let outcome = match next {
                    Err(_elapsed) => Err(LlmError::Timeout),
                    Ok(None) if driver.too_large.load(std::sync::atomic::Ordering::SeqCst) => {
                        Err(LlmError::InvalidResponse(format!(
                            "the streamed answer exceeded {} MiB",
                            MAX_STREAM_BYTES / (1024 * 1024)
                        )))
                    }
                    Ok(None) => driver.decoder.end_of_body().map(|events| Decoded {
                        events,
                        finished: true,
                    }),
                    Ok(Some(Err(error))) => Err(sse_error(error)),
                    Ok(Some(Ok(event))) => driver.decoder.decode(&event),
                };
                match outcome {
                    Ok(decoded) => {
                        driver.pending.extend(decoded.events);
                        driver.finished = decoded.finished;
                    }
                    Err(error) => {
                        driver.finished = true;
                        driver.pending.clear();
                        return Some((Err(redacted(error, driver.api_key.as_ref())), driver));
                    }
                }
            }
        },
    )))
}

fn sse_error(error: EventStreamError<reqwest::Error>) -> LlmError {
    match error {
        EventStreamError::Transport(error) => transport_error(error),
        EventStreamError::Utf8(error) => {
            LlmError::InvalidResponse(format!("the event stream is not valid UTF-8: {error}"))
        }
        EventStreamError::Parser(error) => {
            LlmError::InvalidResponse(format!("the event stream is malformed: {error}"))
        }
    }
}

/// Parses the JSON payload of an event, naming the event in the error.
pub(crate) fn parse_data<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, LlmError> {
    serde_json::from_str(&event.data).map_err(|error| {
        LlmError::InvalidResponse(format!(
            "a '{}' event does not hold the expected JSON: {error}",
            event.event
        ))
    })
}
