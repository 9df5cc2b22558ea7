//! A fake model upstream for tests: an axum server on a loopback port that
//! speaks the OpenAI API (`/v1/chat/completions`, `/v1/models`,
//! `/v1/embeddings`) and Anthropic's Messages API (`/anthropic/v1/messages`).
//!
//! What a chat request gets is a [`Behaviour`]: the next one pushed with
//! [`FakeLlm::push`], or else the one its model name selects
//! ([`Behaviour::for_model`]), so a test that cannot reach the fake (an
//! HTTP-level test of Karen's chat API) still picks one through the model.
//! Answers are deterministic. The fake counts requests, keeps the last
//! request body and headers, and notices streams the client abandoned.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The fake's model catalogue (`GET /v1/models`); each name selects a behaviour.
pub const FAKE_MODELS: &[&str] = &[
    "fake-echo",
    "fake-tool",
    "fake-no-usage",
    "fake-slow",
    "fake-chunked",
    "fake-429",
    "fake-500",
    "fake-malformed-json",
    "fake-malformed-sse",
];

/// Length of the fake's embedding vectors.
pub const FAKE_EMBEDDING_DIMENSIONS: usize = 8;

/// What the fake does with one chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers `You said: <last user message>` with usage; a stream comes in
    /// 3 chunks.
    Echo,
    /// The echo answer streamed in `chunks` pieces, `interval` apart (usage in
    /// the last chunk); a whole answer after `interval`.
    Chunked { chunks: usize, interval: Duration },
    /// Calls the tool `name` with `arguments` (a JSON text); streamed, the
    /// arguments come in pieces.
    ToolCall { name: String, arguments: String },
    /// The echo answer without any usage.
    NoUsage,
    /// Status 200 with a body (or stream event) that is not valid JSON.
    MalformedJson,
    /// A stream that breaks off into bytes that are not UTF-8, without end.
    MalformedSse,
    /// The echo answer after `delay` (before the headers are sent).
    Slow(Duration),
    /// 429, with this `Retry-After` value if any (seconds or an HTTP date).
    RateLimited { retry_after: Option<String> },
    /// This status with a vendor-format error body.
    Status(u16),
    /// Answers exactly this text (with usage).
    Reply(String),
}

impl Behaviour {
    /// The behaviour a model name selects when nothing is queued:
    /// `fake-tool` (a `get_weather` call for Paris), `fake-no-usage`,
    /// `fake-slow` (5 s), `fake-chunked` (5 chunks, 20 ms apart), `fake-429`
    /// (`Retry-After: 1`), `fake-500`, `fake-malformed-json`,
    /// `fake-malformed-sse`; anything else echoes.
    pub fn for_model(model: &str) -> Self {
        match model {
            "fake-tool" => Behaviour::ToolCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            },
            "fake-no-usage" => Behaviour::NoUsage,
            "fake-slow" => Behaviour::Slow(Duration::from_secs(5)),
            "fake-chunked" => Behaviour::Chunked {
                chunks: 5,
                interval: Duration::from_millis(20),
            },
            "fake-429" => Behaviour::RateLimited {
                retry_after: Some("1".into()),
            },
            "fake-500" => Behaviour::Status(500),
            "fake-malformed-json" => Behaviour::MalformedJson,
            "fake-malformed-sse" => Behaviour::MalformedSse,
            _ => Behaviour::Echo,
        }
    }
}

/// The text the fake answers to `question`.
pub fn echo_text(question: &str) -> String {
    format!("You said: {question}")
}

/// The token count the fake reports for a text: its whitespace-separated words.
pub fn fake_token_count(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Behaviour>>,
    requests: AtomicUsize,
    last_body: Mutex<Option<Value>>,
    last_headers: Mutex<HeaderMap>,
    streams_completed: AtomicUsize,
    streams_cancelled: AtomicUsize,
    stream_ended: Notify,
}

/// A running fake upstream; stops when dropped.
pub struct FakeLlm {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    /// Starts the fake on `127.0.0.1` and an ephemeral port.
    pub async fn start() -> FakeLlm {
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/v1/chat/completions", post(openai::chat))
            .route("/v1/models", get(openai::models))
            .route("/v1/embeddings", post(openai::embeddings))
            .route("/anthropic/v1/messages", post(anthropic::messages))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake upstream");
        let address = listener.local_addr().expect("fake upstream address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeLlm {
            address,
            shared,
            server,
        }
    }

    /// Where the fake listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// The Anthropic base URL (the client appends `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}/anthropic", self.address)
    }

    /// Queues `behaviour` for the next chat request (queued ones go first, in order).
    pub fn push(&self, behaviour: Behaviour) {
        self.shared.queue.lock().unwrap().push_back(behaviour);
    }

    /// How many requests reached the fake (every endpoint).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The JSON body of the last request (a string if it was not JSON).
    pub fn last_request(&self) -> Option<Value> {
        self.shared.last_body.lock().unwrap().clone()
    }

    /// A header of the last request.
    pub fn last_header(&self, name: &str) -> Option<String> {
        let headers = self.shared.last_headers.lock().unwrap();
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }

    /// Streams sent to their end.
    pub fn streams_completed(&self) -> usize {
        self.shared.streams_completed.load(Ordering::SeqCst)
    }

    /// Streams the client went away from before their end.
    pub fn streams_cancelled(&self) -> usize {
        self.shared.streams_cancelled.load(Ordering::SeqCst)
    }

    /// Waits (at most `within`) until a stream has been cancelled; whether one was.
    pub async fn wait_for_cancelled_stream(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ended = self.shared.stream_ended.notified();
            if self.streams_cancelled() > 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return self.streams_cancelled() > 0;
            }
        }
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A loopback URL (`http://127.0.0.1:PORT/v1`) where nothing listens, so
/// connecting is refused.
pub async fn refused_base_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a probe port");
    let address = listener.local_addr().expect("probe address");
    drop(listener);
    format!("http://{address}/v1")
}

impl Shared {
    /// Counts and records a request; the behaviour it gets.
    fn receive(&self, headers: &HeaderMap, body: &Bytes) -> (Value, Behaviour) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let value = serde_json::from_slice::<Value>(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        *self.last_body.lock().unwrap() = Some(value.clone());
        *self.last_headers.lock().unwrap() = headers.clone();
        let model = value["model"].as_str().unwrap_or_default();
        let behaviour = self
            .queue
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Behaviour::for_model(model));
        (value, behaviour)
    }
}

/// Notes whether a streamed body reached its end when it is dropped: hyper
/// drops a body whose client went away.
struct StreamGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.shared.streams_completed
        } else {
            &self.shared.streams_cancelled
        };
        counter.fetch_add(1, Ordering::SeqCst);
        self.shared.stream_ended.notify_waiters();
    }
}

/// A piece of a streamed body, sent after a pause.
struct Frame {
    delay: Duration,
    bytes: Bytes,
}

impl Frame {
    fn now(bytes: impl Into<Bytes>) -> Self {
        Frame {
            delay: Duration::ZERO,
            bytes: bytes.into(),
        }
    }

    fn after(delay: Duration, bytes: impl Into<Bytes>) -> Self {
        Frame {
            delay,
            bytes: bytes.into(),
        }
    }
}

/// A `text/event-stream` response sending `frames`, watched by a [`StreamGuard`].
fn event_stream(shared: &Arc<Shared>, frames: Vec<Frame>) -> Response {
    let guard = StreamGuard {
        shared: shared.clone(),
        finished: false,
    };
    let state = (VecDeque::from(frames), guard);
    let body = futures::stream::unfold(state, |(mut frames, mut guard)| async move {
        let frame = frames.pop_front()?;
        if !frame.delay.is_zero() {
            tokio::time::sleep(frame.delay).await;
        }
        guard.finished = frames.is_empty();
        Some((Ok::<_, Infallible>(frame.bytes), (frames, guard)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// `text` cut into `pieces` parts of about equal length (fewer if it is short).
fn split_text(text: &str, pieces: usize) -> Vec<String> {
    let characters: Vec<char> = text.chars().collect();
    let size = characters.len().div_ceil(pieces.max(1)).max(1);
    characters
        .chunks(size)
        .map(|chunk| chunk.iter().collect())
        .collect()
}

/// The text of an OpenAI or Anthropic message content (a string or a list of blocks).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|block| block["text"].as_str().or(block["content"].as_str()))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The last user message and the fake token count of every message.
fn read_conversation(body: &Value) -> (String, u32) {
    let mut prompt_tokens = fake_token_count(&content_text(&body["system"]));
    let mut question = String::new();
    for message in body["messages"].as_array().into_iter().flatten() {
        let text = content_text(&message["content"]);
        prompt_tokens += fake_token_count(&text);
        if message["role"] == "user" && !text.is_empty() {
            question = text;
        }
    }
    (question, prompt_tokens)
}

/// Which vendor API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    /// An error response in the vendor's format.
    fn error(self, status: StatusCode, message: &str) -> Response {
        let kind = match (self, status.as_u16()) {
            (Api::OpenAi, 429) => "requests",
            (Api::OpenAi, _) => "server_error",
            (Api::Anthropic, 429) => "rate_limit_error",
            (Api::Anthropic, 401) => "authentication_error",
            (Api::Anthropic, 529) => "overloaded_error",
            (Api::Anthropic, code) if code < 500 => "invalid_request_error",
            (Api::Anthropic, _) => "api_error",
        };
        let body = match self {
            Api::OpenAi => json!({"error": {"message": message, "type": kind, "code": null}}),
            Api::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
        };
        json_response(status, &body)
    }

    /// What the real API refuses before doing anything.
    fn refusal(self, headers: &HeaderMap, request: &Value) -> Option<Response> {
        let missing = match self {
            Api::OpenAi => request["model"]
                .as_str()
                .is_none()
                .then_some("model is required"),
            Api::Anthropic if headers.get("x-api-key").is_none() => {
                return Some(self.error(StatusCode::UNAUTHORIZED, "x-api-key header is required"));
            }
            Api::Anthropic if headers.get("anthropic-version").is_none() => {
                Some("anthropic-version header is required")
            }
            Api::Anthropic => request["max_tokens"]
                .as_u64()
                .is_none()
                .then_some("max_tokens: Field required"),
        };
        missing.map(|message| self.error(StatusCode::BAD_REQUEST, message))
    }
}

/// A successful answer, before it is put in a vendor's format.
struct Plan {
    model: String,
    text: String,
    tool: Option<(String, String)>,
    prompt_tokens: u32,
    completion_tokens: u32,
    usage: bool,
    chunks: usize,
    interval: Duration,
}

impl Plan {
    fn new(request: &Value, behaviour: Behaviour) -> Plan {
        let (question, prompt_tokens) = read_conversation(request);
        let usage = behaviour != Behaviour::NoUsage;
        let (chunks, interval) = match behaviour {
            Behaviour::Chunked { chunks, interval } => (chunks, interval),
            _ => (3, Duration::ZERO),
        };
        let (text, tool) = match behaviour {
            Behaviour::ToolCall { name, arguments } => {
                ("Let me look that up.".to_owned(), Some((name, arguments)))
            }
            Behaviour::Reply(text) => (text, None),
            _ => (echo_text(&question), None),
        };
        let tool_words = tool.as_ref().map_or(0, |(name, arguments)| {
            fake_token_count(&format!("{name} {arguments}"))
        });
        Plan {
            model: request["model"].as_str().unwrap_or_default().to_owned(),
            completion_tokens: fake_token_count(&text) + tool_words,
            text,
            tool,
            prompt_tokens,
            usage,
            chunks,
            interval,
        }
    }

    /// The answer text in pieces, the first at once and the others `interval` apart.
    fn pieces(&self) -> impl Iterator<Item = (Duration, String)> + '_ {
        split_text(&self.text, self.chunks)
            .into_iter()
            .enumerate()
            .map(|(position, piece)| {
                (
                    if position == 0 {
                        Duration::ZERO
                    } else {
                        self.interval
                    },
                    piece,
                )
            })
    }
}

async fn chat(api: Api, shared: Arc<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, behaviour) = shared.receive(&headers, &body);
    if let Some(refusal) = api.refusal(&headers, &request) {
        return refusal;
    }
    let stream = request["stream"] == true;
    match &behaviour {
        Behaviour::RateLimited { retry_after } => {
            let message = "Rate limit reached for fake model";
            let mut response = api.error(StatusCode::TOO_MANY_REQUESTS, message);
            if let Some(value) = retry_after {
                let value = value.parse().unwrap();
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        Behaviour::Status(code) => {
            let message = format!("fake upstream failure ({code})");
            return api.error(StatusCode::from_u16(*code).unwrap(), &message);
        }
        Behaviour::MalformedJson if stream => {
            let frame = Frame::now("data: {\"type\": \"message_start\", \"choices\": [\n\n");
            return event_stream(&shared, vec![frame]);
        }
        Behaviour::MalformedJson => {
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"choices": [{"message": {"content": "cut"#))
                .unwrap();
        }
        Behaviour::Slow(delay) => tokio::time::sleep(*delay).await,
        Behaviour::Chunked { interval, .. } if !stream => tokio::time::sleep(*interval).await,
        _ => {}
    }
    let malformed_sse = behaviour == Behaviour::MalformedSse;
    let plan = Plan::new(&request, behaviour);
    match (api, stream) {
        (Api::OpenAi, false) => openai::whole(&plan),
        (Api::Anthropic, false) => anthropic::whole(&plan),
        (api, true) => {
            let mut frames = match api {
                Api::OpenAi => {
                    let include_usage = request["stream_options"]["include_usage"] == true;
                    openai::frames(&plan, include_usage)
                }
                Api::Anthropic => anthropic::frames(&plan),
            };
            if malformed_sse {
                // Up to the first piece of text, then bytes that are not UTF-8.
                frames.truncate(if api == Api::OpenAi { 2 } else { 4 });
                frames.push(Frame::now(&b"data: \xff\xfe\xfd not text\n\n"[..]));
            }
            event_stream(&shared, frames)
        }
    }
}

mod openai;

/// The fake's embedding of `text`: a unit vector of [`FAKE_EMBEDDING_DIMENSIONS`].
pub fn fake_embedding(text: &str) -> Vec<f32> {
    let vector: Vec<f32> = (0..FAKE_EMBEDDING_DIMENSIONS as u64)
        .map(|dimension| {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ dimension;
            for byte in text.bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            (hash % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = vector
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    vector.into_iter().map(|x| x / norm).collect()
}

mod anthropic;
