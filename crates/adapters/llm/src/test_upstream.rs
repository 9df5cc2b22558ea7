//! A small OpenAI-compatible `/v1/embeddings` server on a loopback port, for
//! the embedding client's tests: it records what it receives and answers
//! from a script, or by default with a deterministic embedding per input.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::{Endpoint, OpenAiCompatible, OutboundPolicy, Timeouts, http_client};

/// What the server does with the next request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// [`echo_vector`] of each input, listed in reverse order with their
    /// `index`, and `usage.prompt_tokens` = 2 per input.
    Echo,
    /// Like `Echo`, without `usage`.
    EchoWithoutUsage,
    /// Like `Echo`, with vectors of this many dimensions.
    EchoWithDimensions(usize),
    /// This JSON body with status 200.
    Body(Value),
    /// This status and JSON body, with an optional `Retry-After`.
    Status(u16, Value, Option<&'static str>),
    /// Waits this long, then echoes.
    Slow(Duration),
}

/// What the server received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) body: Value,
    pub(crate) authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
}

/// The running server; it stops when the test's runtime ends.
pub(crate) struct Upstream {
    address: SocketAddr,
    shared: Arc<Shared>,
}

impl Upstream {
    pub(crate) async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, shared }
    }

    /// Queues replies for the next requests (then it echoes).
    pub(crate) fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    pub(crate) fn port(&self) -> u16 {
        self.address.port()
    }

    /// A client for this server, allowed by the outbound policy.
    pub(crate) fn client(&self, name: &str, api_key: Option<&str>) -> OpenAiCompatible {
        let policy = OutboundPolicy::new([self.address.to_string()]);
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
            stream_idle: Duration::from_secs(5),
        };
        OpenAiCompatible::new(
            name,
            Endpoint::parse(&self.base_url(), &policy).unwrap(),
            api_key.map(secrecy::SecretString::from),
            http_client(&policy, &timeouts).unwrap(),
            timeouts,
        )
    }
}

/// The test server's embedding of `text`: `[chars, words, 1]`.
pub(crate) fn echo_vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut vector = vec![
        text.chars().count() as f32,
        text.split_whitespace().count() as f32,
        1.0,
    ];
    vector.resize(dimensions, 0.5);
    vector
}

fn echo(body: &Value, usage: bool, dimensions: usize) -> Value {
    let inputs: Vec<&str> = body["input"]
        .as_array()
        .map(|inputs| inputs.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(index, input)| {
            json!({"object": "embedding", "index": index, "embedding": echo_vector(input, dimensions)})
        })
        .collect();
    let mut answer = json!({"object": "list", "data": data, "model": body["model"]});
    if usage {
        answer["usage"] =
            json!({"prompt_tokens": inputs.len() * 2, "total_tokens": inputs.len() * 2});
    }
    answer
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    shared.received.lock().unwrap().push(Received {
        body: body.clone(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    });
    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Echo);
    match reply {
        Reply::Echo => Json(echo(&body, true, 3)).into_response(),
        Reply::EchoWithoutUsage => Json(echo(&body, false, 3)).into_response(),
        Reply::EchoWithDimensions(dimensions) => {
            Json(echo(&body, true, dimensions)).into_response()
        }
        Reply::Body(answer) => Json(answer).into_response(),
        Reply::Status(status, answer, retry_after) => {
            let status = StatusCode::from_u16(status).unwrap();
            let mut response = (status, Json(answer)).into_response();
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, after.parse().unwrap());
            }
            response
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Json(echo(&body, true, 3)).into_response()
        }
    }
}
