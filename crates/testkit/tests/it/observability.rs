//! Traces and logs of whole requests: the span tree of a chat turn as an
//! OTLP collector receives it, W3C trace context in and out, trace ids on
//! log lines, and a scan of everything logged at `trace` level for secrets
//! and message content.
//!
//! The subscriber is process-global state, so these tests never install one
//! globally: each runs on a single-threaded runtime and installs its own
//! subscriber (with its own tracer provider and log capture) for that thread
//! only. Every task of the server under test runs on that thread.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::post;
use http_body_util::StreamBody;
use karen::config::{Config, OtlpProtocol};
use karen_testkit::fake_llm::FakeLlm;
use karen_testkit::{Backend, PASSWORD, TestApp, spawn_with};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message as _;
use serde_json::{Value, json};

use crate::assistant_upstream::through;

/// Generates a `sqlite` and a `postgres` test on a single-threaded runtime,
/// so that the test's own subscriber sees every task of the server.
macro_rules! on_both_backends_one_thread {
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "current_thread")]
                async fn sqlite() {
                    super::$case(karen_testkit::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "current_thread")]
                async fn postgres() {
                    super::$case(karen_testkit::Backend::Postgres).await;
                }
            }
        )+
    };
}

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
    service: String,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// An OTLP collector (HTTP/protobuf at `/v1/traces` and gRPC) on a thread
/// and runtime of its own: the exporter blocks its thread while it sends.
struct Collector {
    address: SocketAddr,
    spans: Spans,
}

impl Collector {
    fn start() -> Collector {
        let spans = Spans::default();
        let (sender, receiver) = std::sync::mpsc::channel();
        let state = spans.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                sender.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new()
                    .route("/v1/traces", post(http_export))
                    .route(
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                        post(grpc_export),
                    )
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let address = receiver.recv().unwrap();
        Collector { address, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// A configuration whose `[tracing]` exports here.
    fn config(&self, protocol: OtlpProtocol) -> Config {
        let mut config = Config::default();
        config.tracing.enabled = Some(true);
        config.tracing.protocol = protocol;
        config.tracing.endpoint = format!("http://{}", self.address);
        config.tracing.service_name = "karen-under-test".into();
        config.tracing.export_timeout_secs = 5;
        config
    }
}

fn collect(spans: &Spans, body: &[u8]) {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut received = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                    service: service.clone(),
                });
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

async fn http_export(State(spans): State<Spans>, body: Bytes) -> Response {
    collect(&spans, &body);
    Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Body::from(
            ExportTraceServiceResponse::default().encode_to_vec(),
        ))
        .unwrap()
}

/// A unary gRPC call: a 5-byte frame header (compression flag, length), the
/// message; the answer ends with `grpc-status` in the trailers.
async fn grpc_export(State(spans): State<Spans>, body: Bytes) -> Response {
    collect(&spans, &body[5..]);
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(reply.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&reply);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(framed))),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(StreamBody::new(frames)))
        .unwrap()
}

/// What a subscriber writes (for tests that read the logs).
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
            .collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Karen's subscriber as `config` describes it, installed for this thread.
struct Observed {
    telemetry: Arc<karen::traces::Telemetry>,
    logs: Captured,
    _guard: tracing::subscriber::DefaultGuard,
}

fn observe(config: &Config) -> Observed {
    let telemetry = karen::traces::Telemetry::for_config(config).unwrap();
    let logs = Captured::default();
    let subscriber = karen::logging::subscriber(&config.log, telemetry.provider(), logs.clone());
    Observed {
        telemetry: Arc::new(telemetry),
        logs,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

impl Observed {
    /// Exports what has ended so far (off this thread, which serves the requests).
    async fn flush(&self) {
        let telemetry = self.telemetry.clone();
        tokio::task::spawn_blocking(move || telemetry.provider().force_flush())
            .await
            .unwrap()
            .unwrap();
    }

    /// Flushes until `found` finds something in what the collector received.
    async fn wait_for<T>(
        &self,
        collector: &Collector,
        found: impl Fn(&[Received]) -> Option<T>,
    ) -> T {
        for _ in 0..50 {
            self.flush().await;
            if let Some(value) = found(&collector.spans()) {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("not exported: {:#?}", collector.spans());
    }
}

fn with_request_id<'a>(spans: &'a [Received], id: &str) -> Option<&'a Received> {
    spans.iter().find(|s| s.attribute("request_id") == Some(id))
}

/// Whether `span` descends from `ancestor` within `spans`.
fn descends_from(spans: &[Received], span: &Received, ancestor: &Received) -> bool {
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut parent = span.parent.as_str();
    for _ in 0..64 {
        if parent == ancestor.span_id {
            return true;
        }
        match by_id.get(parent) {
            Some(next) => parent = next.parent.as_str(),
            None => return false,
        }
    }
    false
}

async fn conversation(app: &TestApp, token: &str, body: Value) -> String {
    app.post("/v1/conversations", token, body)
        .await
        .expect(201)
        .str("id")
        .to_owned()
}

const SECRET_PHRASE: &str = "the-marmalade-falcon-flies-at-midnight";

async fn one_chat_request_is_one_connected_trace(backend: Backend) {
    let collector = Collector::start();
    let observed = observe(&collector.config(OtlpProtocol::Http));
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let token = acme.owner_token.as_str();
    let chat = conversation(&app, token, json!({})).await;
    let reply = app
        .http
        .post(format!("{}/v1/conversations/{chat}/messages", app.base_url))
        .bearer_auth(token)
        .header("x-request-id", "traced-chat-1")
        .json(&json!({"content": format!("tell me about {SECRET_PHRASE}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    let (request, trace) = observed
        .wait_for(&collector, |spans| {
            let request = with_request_id(spans, "traced-chat-1")?;
            let trace: Vec<Received> = spans
                .iter()
                .filter(|s| s.trace_id == request.trace_id)
                .cloned()
                .collect();
            trace
                .iter()
                .any(|s| s.name.starts_with("chat "))
                .then(|| (request.clone(), trace))
        })
        .await;
    assert_eq!(request.service, "karen-under-test");
    assert_eq!(
        request.name,
        "POST /v1/conversations/{conversation_id}/messages"
    );
    assert_eq!(request.parent, "", "no traceparent came in: a root span");
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));
    assert_eq!(
        request.attribute("route"),
        Some("/v1/conversations/{conversation_id}/messages")
    );
    assert_eq!(
        request.attribute("tenant_id"),
        Some(acme.id.to_string().as_str())
    );
    assert_eq!(
        request.attribute("user_id"),
        Some(acme.owner_id.to_string().as_str())
    );

    let transactions: Vec<&Received> = trace
        .iter()
        .filter(|s| s.name == "db.transaction")
        .collect();
    assert!(!transactions.is_empty(), "{trace:#?}");
    for transaction in &transactions {
        assert!(
            descends_from(&trace, transaction, &request),
            "{transaction:?}"
        );
        assert!(transaction.attribute("db.system").is_some());
    }
    assert!(
        transactions
            .iter()
            .any(|t| t.attribute("tenant_id") == Some(acme.id.to_string().as_str())),
        "{transactions:#?}"
    );

    let llm = trace
        .iter()
        .find(|s| s.name == "chat fake-echo")
        .unwrap_or_else(|| panic!("an llm.call span: {trace:#?}"));
    assert!(descends_from(&trace, llm, &request), "{llm:?}");
    assert_eq!(llm.attribute("gen_ai.system"), Some("fake"));
    assert_eq!(llm.attribute("gen_ai.request.model"), Some("fake-echo"));
    let input: u64 = llm
        .attribute("gen_ai.usage.input_tokens")
        .unwrap()
        .parse()
        .unwrap();
    let output: u64 = llm
        .attribute("gen_ai.usage.output_tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(input > 0 && output > 0, "{llm:?}");

    // The upstream joined the trace, as a child of the llm.call span.
    let traceparent = fake
        .last_header("traceparent")
        .expect("traceparent sent upstream");
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", request.trace_id, llm.span_id),
    );

    // Never any content: not the question, not the answer.
    for span in &trace {
        for value in span.attributes.values() {
            assert!(!value.contains(SECRET_PHRASE), "content in {span:?}");
        }
    }
    assert!(!observed.logs.text().contains(SECRET_PHRASE));
    app.stop().await;
}

async fn an_incoming_traceparent_is_continued_and_logged(backend: Backend) {
    let collector = Collector::start();
    let mut config = collector.config(OtlpProtocol::Http);
    config.log.level = "info".into();
    let observed = observe(&config);
    let Some(app) = spawn_with(backend, |_| {}).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let me = app
        .http
        .get(format!("{}/v1/me", app.base_url))
        .bearer_auth(&acme.owner_token)
        .header("x-request-id", "traced-me-1")
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let request = observed
        .wait_for(&collector, |spans| {
            with_request_id(spans, "traced-me-1").cloned()
        })
        .await;
    assert_eq!(request.trace_id, caller_trace);
    assert_eq!(request.parent, caller_span);
    assert_eq!(
        request.attribute("tenant_id"),
        Some(acme.id.to_string().as_str())
    );

    // The request's log line names the same trace and its span.
    let lines = observed.logs.lines();
    let line = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "traced-me-1" && l["message"] == "request completed")
        .unwrap_or_else(|| panic!("request line: {lines:#?}"));
    assert_eq!(line["trace_id"], caller_trace);
    assert_eq!(line["span_id"], request.span_id);
    assert_eq!(line["span"]["tenant_id"], acme.id.to_string());
    assert_eq!(line["span"]["user_id"], acme.owner_id.to_string());
    assert!(line["timestamp"].is_string() && line["level"] == "INFO");
    assert!(line["span"].get("otel.name").is_none(), "{line}");
    app.stop().await;
}

/// Everything logged at `trace` level during a full workload, and every
/// exported span, is free of passwords, keys, credentials and message content.
async fn no_secret_or_content_reaches_the_logs_or_the_spans(backend: Backend) {
    let collector = Collector::start();
    let mut config = collector.config(OtlpProtocol::Http);
    config.log.level = "trace".into();
    let observed = observe(&config);
    let fake = FakeLlm::start().await;
    let Some(app) = spawn_with(backend, |c| through(&fake, c)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let login = app.login("acme", &acme.owner_email, PASSWORD).await;
    login.expect(200);
    let token = login.str("access_token").to_owned();
    let credential = "sk-planted-provider-credential-0f9e8d7c";
    app.post(
        "/v1/providers",
        &token,
        json!({"name": "own", "kind": "openai", "base_url": fake.base_url(),
               "api_key": credential, "models": ["team-model"]}),
    )
    .await
    .expect(201);
    let (_, api_key) = app.create_api_key(&token, json!({"name": "scan"})).await;
    let chat = conversation(&app, &token, json!({})).await;
    app.post(
        &format!("/v1/conversations/{chat}/messages"),
        &token,
        json!({"content": format!("remember {SECRET_PHRASE}"), "model": "team-model"}),
    )
    .await
    .expect(200);
    assert_eq!(
        fake.last_header("authorization").as_deref(),
        Some(format!("Bearer {credential}").as_str()),
        "the planted credential was used"
    );
    let completion = app
        .http
        .post(format!("{}/v1/chat/completions", app.base_url))
        .bearer_auth(&api_key)
        .json(&json!({"model": "fake-echo",
                      "messages": [{"role": "user", "content": format!("again {SECRET_PHRASE}")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(completion.status(), 200);
    let refresh = app
        .http
        .post(format!("{}/v1/auth/refresh", app.base_url))
        .json(&json!({"refresh_token": acme.owner_refresh}))
        .send()
        .await
        .unwrap();
    assert!(refresh.status().is_success() || refresh.status().is_client_error());
    // Password tokens: a setup token used, and a reset token left pending.
    let invited = app
        .post("/v1/users", &token, json!({"email": "invited@acme.test"}))
        .await;
    invited.expect(201);
    let setup_token = invited.body["password_setup"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let chosen_password = "planted chosen passphrase 7c1e";
    app.call(
        "POST",
        "/v1/auth/password",
        None,
        Some(json!({"token": setup_token, "new_password": chosen_password})),
    )
    .await
    .expect(204);
    let invited_id = invited.uuid("/user/id");
    let reset = app
        .post(
            &format!("/v1/users/{invited_id}/password-reset"),
            &token,
            json!({}),
        )
        .await;
    let reset_token = reset.expect(201).str("token").to_owned();
    let operator_key = app.operator_key.clone();
    app.stop().await;
    observed.flush().await;

    let logged = observed.logs.text();
    assert!(
        logged.lines().count() > 20,
        "the workload was logged:\n{logged}"
    );
    assert!(logged.contains("\"level\":\"TRACE\"") || logged.contains("\"level\":\"DEBUG\""));
    let exported = format!("{:?}", collector.spans());
    assert!(
        exported.contains("gen_ai.request.model"),
        "spans were exported"
    );
    let secrets = [
        PASSWORD,
        credential,
        api_key.as_str(),
        token.as_str(),
        acme.owner_token.as_str(),
        acme.owner_refresh.as_str(),
        operator_key.as_str(),
        setup_token.as_str(),
        reset_token.as_str(),
        chosen_password,
        SECRET_PHRASE,
        "$argon2",
    ];
    for secret in secrets {
        assert!(
            !logged.contains(secret),
            "a secret reached the log: {secret}"
        );
        assert!(
            !exported.contains(secret),
            "a secret reached a span: {secret}"
        );
    }
}

on_both_backends_one_thread!(
    one_chat_request_is_one_connected_trace,
    an_incoming_traceparent_is_continued_and_logged,
    no_secret_or_content_reaches_the_logs_or_the_spans,
);

/// Export over OTLP/gRPC reaches a collector too.
#[tokio::test(flavor = "current_thread")]
async fn spans_are_exported_over_grpc() {
    let collector = Collector::start();
    let observed = observe(&collector.config(OtlpProtocol::Grpc));
    let Some(app) = spawn_with(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let health = app
        .http
        .get(format!("{}/v1/me", app.base_url))
        .header("x-request-id", "grpc-exported-1")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 401);
    let request = observed
        .wait_for(&collector, |spans| {
            with_request_id(spans, "grpc-exported-1").cloned()
        })
        .await;
    assert_eq!(request.attribute("http.response.status_code"), Some("401"));
    assert_eq!(request.service, "karen-under-test");
    app.stop().await;
}
