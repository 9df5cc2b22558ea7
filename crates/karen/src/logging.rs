//! Structured logs and the spans behind traces, in one subscriber.
//!
//! Logs are JSON lines (default) or human-readable (`[log] format =
//! "pretty"`), filtered by `[log] level` (`info,karen_sql=debug`), or by
//! `KAREN_LOG`, else `RUST_LOG`, when set. A JSON line carries `timestamp`,
//! `level`, `target`, `message` and the event's fields, the fields of every
//! span it happened in under `span` (`request_id`, `method`, `route`,
//! `tenant_id`, `user_id` for a request), and `trace_id` and `span_id`.
//!
//! Spans go to OpenTelemetry (see [`crate::traces`]) at `info` and above,
//! whatever the log level, except those of the HTTP and export libraries.

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{Config, LogConfig, LogFormat};
use crate::traces::{Telemetry, tracer_provider};

/// Environment variables that replace `[log] level`, first found wins.
pub const LOG_FILTER_VARIABLES: [&str; 2] = ["KAREN_LOG", "RUST_LOG"];

/// Installs the process's subscriber: logs to stdout and spans to the
/// configured exporter. Keep the returned [`Telemetry`] and shut it down
/// last, so the final spans are sent.
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let provider = tracer_provider(config)?;
    let subscriber = subscriber(&config.log, &provider, std::io::stdout);
    // Fails only if a subscriber is installed already (a test's): keep that one.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(Telemetry::new(provider))
}

/// Installs a global subscriber writing logs to `writer`, exporting no spans
/// (administration commands; tests capture logs this way). Later calls are ignored.
pub fn init_with_writer<W>(config: &LogConfig, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::AlwaysOff,
        )))
        .build();
    let _ = tracing::subscriber::set_global_default(subscriber(config, &provider, writer));
}

/// The subscriber: logs to `writer` as `[log]` says, spans to `provider`.
/// Tests install it for their own thread with `tracing::subscriber::set_default`.
pub fn subscriber<W>(
    log: &LogConfig,
    provider: &opentelemetry_sdk::trace::SdkTracerProvider,
    writer: W,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    use opentelemetry::trace::TracerProvider as _;

    let dispatch = Arc::new(OnceLock::new());
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("karen"))
        .with_location(false)
        .with_threads(false)
        .with_filter(span_filter());
    Registry::default()
        .with(spans)
        .with(log_layer(log, writer, dispatch.clone()))
        .with(RememberDispatch(dispatch))
}

fn log_layer<S, W>(
    log: &LogConfig,
    writer: W,
    dispatch: Arc<OnceLock<WeakDispatch>>,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(log_directives(log)).unwrap_or_else(|_| EnvFilter::new("info"));
    match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonLines { dispatch })
            .fmt_fields(JsonFields::new())
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    }
}

/// Keeps a handle on the subscriber once it becomes a `Dispatch`: the log
/// format reads the OpenTelemetry ids through it (while an event is being
/// dispatched, `tracing::dispatcher::get_default` answers a no-op one).
struct RememberDispatch(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for RememberDispatch {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// The log filter: `KAREN_LOG`, else `RUST_LOG`, else `[log] level`. A
/// variable that is not a valid filter is reported and ignored.
fn log_directives(log: &LogConfig) -> String {
    for variable in LOG_FILTER_VARIABLES {
        let Ok(value) = std::env::var(variable) else {
            continue;
        };
        if value.trim().is_empty() {
            continue;
        }
        if EnvFilter::try_new(&value).is_ok() {
            return value;
        }
        eprintln!("warning: {variable}='{value}' is not a log filter; using [log] level");
    }
    log.level.clone()
}

/// Which spans (and events, as span events) become OpenTelemetry data: Karen's
/// at `info` and above; none of the libraries that carry the export itself.
fn span_filter() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_default(LevelFilter::INFO)
        .with_targets(
            [
                "h2",
                "hyper",
                "hyper_util",
                "tonic",
                "tower",
                "reqwest",
                "opentelemetry",
                "opentelemetry_sdk",
                "opentelemetry_otlp",
                "sqlx",
            ]
            .map(|target| (target, LevelFilter::OFF)),
        )
}

/// One JSON object per event. Unlike `tracing_subscriber`'s JSON format, it
/// merges the fields of all enclosing spans (a database span inside a
/// request keeps the request's id) and adds the trace and span ids.
struct JsonLines {
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::new();
        let mut timestamp = String::new();
        if SystemTime
            .format_time(&mut Writer::new(&mut timestamp))
            .is_ok()
        {
            line.insert("timestamp".into(), Value::String(timestamp));
        }
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        event.record(&mut JsonVisitor(&mut line));

        let mut leaf = None;
        if let Some(scope) = ctx.event_scope() {
            let mut spans = Map::new();
            let mut name = None;
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields)
                {
                    // `otel.*` fields steer the exported span, not the log.
                    spans.extend(
                        fields
                            .into_iter()
                            .filter(|(key, _)| !key.starts_with("otel.")),
                    );
                }
                name = Some(span.name());
                leaf = Some(span.id());
            }
            if let Some(name) = name {
                spans.insert("name".into(), name.into());
            }
            line.insert("span".into(), Value::Object(spans));
        }
        if let Some(leaf) = leaf {
            // Reads the span's extensions: no extension borrow may be held here.
            let context = self
                .dispatch
                .get()
                .and_then(WeakDispatch::upgrade)
                .and_then(|dispatch| tracing_opentelemetry::get_otel_context(&leaf, &dispatch));
            if let Some(context) = context {
                use opentelemetry::trace::TraceContextExt as _;
                let span = context.span();
                let ids = span.span_context();
                if ids.is_valid() {
                    line.insert("trace_id".into(), ids.trace_id().to_string().into());
                    line.insert("span_id".into(), ids.span_id().to_string().into());
                }
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Writes an event's fields into a JSON object.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
