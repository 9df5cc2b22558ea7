//! Metrics: the Prometheus recorder, what `/metrics` renders besides it
//! (pool and readiness gauges read at scrape time, the per-tenant series),
//! and the instrumentation of model providers. Names and labels follow
//! `deploy/metrics.txt`.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::Stream;
use karen_app::Services;
use karen_app::insights::{InsightCollector, InsightRecorder, LATENCY_BUCKETS};
use karen_domain::clock::SystemClock;
use karen_domain::ports::{
    ChatEvent, ChatProvider, ChatRequest, ChatResponse, ChatStream, LlmError, TokenUsage,
};
use karen_http::MetricsSource;
use karen_sql::SqlStore;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument as _;

use crate::models::ConfiguredRouter;

/// The process's recorders: Prometheus, and the insight collector fed
/// through the same facade.
#[derive(Clone)]
pub struct Recorders {
    pub prometheus: PrometheusHandle,
    pub insights: Arc<InsightCollector>,
}

/// The process's recorder, installed on first use; every Karen of the
/// process (test replicas) shares it, and the first one's insight window.
pub fn recorder(insights_window_minutes: u32) -> Result<Recorders, String> {
    static HANDLE: OnceLock<Result<Recorders, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| install(insights_window_minutes))
        .clone()
}

fn install(insights_window_minutes: u32) -> Result<Recorders, String> {
    // The buckets are also the collector's (1 s and 0.25 s are the SLO and
    // pool-wait thresholds the alert rules read).
    let recorder = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .map_err(|e| format!("metrics buckets: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    // Insights run on the wall clock: the collector is process-wide, shared
    // by every Karen of the process, whatever clock each was given.
    let insights = Arc::new(InsightCollector::new(
        insights_window_minutes,
        Arc::new(SystemClock),
    ));
    metrics::set_global_recorder(InsightRecorder::new(recorder, insights.clone()))
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    // Histograms are folded in lazily; upkeep keeps their memory bounded between scrapes.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| format!("starting the metrics upkeep thread: {e}"))?;
    let commit = option_env!("KAREN_GIT_COMMIT").unwrap_or("unknown");
    metrics::gauge!("karen_build_info", "version" => env!("CARGO_PKG_VERSION"), "commit" => commit)
        .set(1.0);
    metrics::gauge!("karen_up").set(1.0);
    karen_app::telemetry::register_zero_series();
    for family in [
        "karen_audit_events_total",
        "karen_audit_verification_failures_total",
    ] {
        metrics::counter!(family).absolute(0);
    }
    Ok(Recorders {
        prometheus: handle,
        insights,
    })
}

/// What `/metrics` serves.
pub struct KarenMetrics {
    handle: PrometheusHandle,
    store: Arc<SqlStore>,
    services: Services,
    router: Arc<ConfiguredRouter>,
}

impl KarenMetrics {
    pub fn new(
        handle: PrometheusHandle,
        store: Arc<SqlStore>,
        services: Services,
        router: Arc<ConfiguredRouter>,
    ) -> Self {
        Self {
            handle,
            store,
            services,
            router,
        }
    }
}

impl MetricsSource for KarenMetrics {
    fn render(&self) -> String {
        for pool in self.store.pool_stats() {
            let in_use = pool.size.saturating_sub(pool.idle);
            metrics::gauge!("karen_db_pool_connections", "pool" => pool.name, "state" => "idle")
                .set(f64::from(pool.idle));
            metrics::gauge!("karen_db_pool_connections", "pool" => pool.name, "state" => "in_use")
                .set(f64::from(in_use));
            metrics::gauge!("karen_db_pool_max_connections", "pool" => pool.name)
                .set(f64::from(pool.max));
        }
        self.router.publish_circuit_states();
        if self.services.health.is_draining() {
            metrics::gauge!(karen_app::health::READY).set(0.0);
        }
        let mut text = self.handle.render();
        text.push_str(&self.services.tenant_series().render());
        text
    }
}

/// A provider whose calls are counted and timed, per upstream attempt (the
/// resilient chain wraps each member in one).
pub struct MeteredProvider {
    inner: Arc<dyn ChatProvider>,
    /// `tenant` for providers tenants configure (bounded labels), else the provider's name.
    tenant_owned: bool,
}

impl MeteredProvider {
    pub fn wrap(inner: Arc<dyn ChatProvider>, tenant_owned: bool) -> Arc<dyn ChatProvider> {
        Arc::new(Self {
            inner,
            tenant_owned,
        })
    }

    fn labels(&self, model: &str) -> Labels {
        let (provider, model) = if self.tenant_owned {
            ("tenant".to_owned(), "tenant".to_owned())
        } else {
            (self.inner.name().to_owned(), model.to_owned())
        };
        Labels { provider, model }
    }
}

#[derive(Clone)]
struct Labels {
    provider: String,
    model: String,
}

impl Labels {
    fn finished(&self, outcome: &'static str, took: Duration) {
        metrics::counter!("karen_llm_requests_total", "provider" => self.provider.clone(), "model" => self.model.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("karen_llm_request_duration_seconds", "provider" => self.provider.clone(), "model" => self.model.clone())
            .record(took.as_secs_f64());
    }

    fn first_token(&self, took: Duration) {
        metrics::histogram!("karen_llm_time_to_first_token_seconds", "provider" => self.provider.clone(), "model" => self.model.clone())
            .record(took.as_secs_f64());
    }
}

/// The `llm.call` span of one upstream attempt: provider, model and, once
/// known, token counts; never the prompt or the completion.
fn llm_span(provider: &str, model: &str, streamed: bool) -> tracing::Span {
    tracing::info_span!(
        "llm.call",
        otel.name = %format_args!("chat {model}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "chat",
        gen_ai.system = %provider,
        gen_ai.request.model = %model,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        llm.streamed = streamed,
        llm.outcome = tracing::field::Empty,
    )
}

fn record_usage(span: &tracing::Span, usage: Option<&TokenUsage>, model: Option<&str>) {
    if let Some(usage) = usage {
        span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
        span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
    }
    if let Some(model) = model {
        span.record("gen_ai.response.model", model);
    }
    span.record("llm.outcome", "ok");
}

fn record_failure(span: &tracing::Span, outcome: &'static str) {
    span.record("llm.outcome", outcome);
    if outcome != "rejected" {
        span.record("otel.status_code", "error");
    }
}

/// The `outcome` label of a failed call.
fn outcome_of(error: &LlmError) -> &'static str {
    match error {
        LlmError::Timeout => "timeout",
        LlmError::RateLimited { .. } => "rate_limited",
        LlmError::CircuitOpen { .. } => "circuit_open",
        // The request itself was refused (by Karen's policy, or by the
        // provider as malformed): not a provider failure.
        LlmError::Refused(_) => "rejected",
        LlmError::Upstream { status, .. } if *status < 500 => "rejected",
        LlmError::Upstream { .. } | LlmError::Connection(_) | LlmError::InvalidResponse(_) => {
            "error"
        }
    }
}

#[async_trait]
impl ChatProvider for MeteredProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let span = llm_span(self.inner.name(), &request.model, false);
        let result = self.inner.complete(request).instrument(span.clone()).await;
        match &result {
            Ok(response) => record_usage(&span, response.usage.as_ref(), Some(&response.model)),
            Err(error) => record_failure(&span, outcome_of(error)),
        }
        let outcome = result.as_ref().map_or_else(outcome_of, |_| "ok");
        self.labels(&request.model)
            .finished(outcome, started.elapsed());
        result
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let started = Instant::now();
        let labels = self.labels(&request.model);
        let span = llm_span(self.inner.name(), &request.model, true);
        match self.inner.stream(request).instrument(span.clone()).await {
            Ok(inner) => Ok(Box::pin(MeteredStream {
                inner,
                labels,
                started,
                first_seen: false,
                ended: false,
                span,
            })),
            Err(error) => {
                record_failure(&span, outcome_of(&error));
                labels.finished(outcome_of(&error), started.elapsed());
                Err(error)
            }
        }
    }

    async fn models(&self) -> Result<Vec<String>, LlmError> {
        self.inner.models().await
    }
}

/// A stream that records time to first event, and the outcome and duration
/// when it ends (or is dropped by a client that left: the provider was fine).
struct MeteredStream {
    inner: ChatStream,
    labels: Labels,
    started: Instant,
    first_seen: bool,
    ended: bool,
    /// The call's `llm.call` span, open until the stream ends.
    span: tracing::Span,
}

impl MeteredStream {
    fn end(&mut self, outcome: &'static str) {
        if !self.ended {
            self.ended = true;
            self.labels.finished(outcome, self.started.elapsed());
        }
    }
}

impl Stream for MeteredStream {
    type Item = Result<ChatEvent, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(event))) => {
                if !self.first_seen {
                    self.first_seen = true;
                    self.labels.first_token(self.started.elapsed());
                }
                if let ChatEvent::Finish { usage, model, .. } = event {
                    record_usage(&self.span, usage.as_ref(), model.as_deref());
                    self.end("ok");
                }
            }
            Poll::Ready(Some(Err(error))) => {
                let outcome = outcome_of(error);
                record_failure(&self.span, outcome);
                self.end(outcome);
            }
            Poll::Ready(None) => self.end("ok"),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        self.end("ok");
    }
}
