//! Traces: the OpenTelemetry tracer provider behind the `tracing` spans.
//!
//! The provider always exists, so every span has a trace id and a span id
//! (log lines carry them, and outbound calls pass them on in `traceparent`).
//! It exports only when `[tracing]` is enabled: through a batch processor
//! to an OTLP collector over HTTP (protobuf) or gRPC, sampling new traces at
//! `sampling_ratio` and following the caller's decision for continued ones.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The tracer provider the configuration asks for. With gRPC export it must
/// be built inside a Tokio runtime (the exporter's connection lives there).
pub fn tracer_provider(config: &Config) -> anyhow::Result<SdkTracerProvider> {
    let settings = &config.tracing;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if !config.tracing_enabled() {
        // Nothing is recorded for Karen's own new traces; a caller's sampled
        // flag is still passed on to the providers Karen calls.
        return Ok(builder
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build());
    }
    let timeout = Duration::from_secs(settings.export_timeout_secs);
    let endpoint = settings.traces_endpoint();
    let exporter = match settings.protocol {
        OtlpProtocol::Http => SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(timeout)
            .build(),
        OtlpProtocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(timeout)
            .build(),
    }
    .with_context(|| format!("tracing.endpoint: cannot export traces to {endpoint}"))?;
    Ok(builder
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio,
        ))))
        .with_batch_exporter(exporter)
        .build())
}

/// Keeps the tracer provider of the process's subscriber; [`Telemetry::shutdown`]
/// sends the spans still buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    pub(crate) fn new(provider: SdkTracerProvider) -> Self {
        Self { provider }
    }

    /// The tracer provider `config` asks for (see [`tracer_provider`]).
    pub fn for_config(config: &Config) -> anyhow::Result<Self> {
        Ok(Self::new(tracer_provider(config)?))
    }

    /// The provider (tests flush it to see their spans at once).
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports what is buffered and stops the exporter. Blocks for at most
    /// the export timeout: call it off the async runtime's workers
    /// (`spawn_blocking`) or after the runtime stopped.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.force_flush() {
            eprintln!("warning: could not export the last spans: {error}");
        }
        let _ = self.provider.shutdown();
    }
}

/// `[tracing]`: OpenTelemetry traces, exported over OTLP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// Export traces. Unset: on in mode `full`, off otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `http` (OTLP/HTTP, protobuf bodies) or `grpc`.
    pub protocol: OtlpProtocol,
    /// The collector: `http://collector:4318` for `http` (`/v1/traces` is
    /// added unless the URL ends with it), `http://collector:4317` for
    /// `grpc`. Empty: the protocol's default port on localhost.
    pub endpoint: String,
    /// Share of new traces recorded, 0.0–1.0. A caller's decision (the
    /// sampled flag of its `traceparent`) is always followed.
    pub sampling_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// How long one export to the collector may take.
    pub export_timeout_secs: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            protocol: OtlpProtocol::Http,
            endpoint: String::new(),
            sampling_ratio: 1.0,
            service_name: "karen".into(),
            export_timeout_secs: 10,
        }
    }
}

impl TracingConfig {
    /// Where spans are sent.
    pub fn traces_endpoint(&self) -> String {
        let endpoint = self.endpoint.trim().trim_end_matches('/');
        match self.protocol {
            OtlpProtocol::Http if endpoint.is_empty() => "http://localhost:4318/v1/traces".into(),
            OtlpProtocol::Http if endpoint.ends_with("/v1/traces") => endpoint.to_owned(),
            OtlpProtocol::Http => format!("{endpoint}/v1/traces"),
            OtlpProtocol::Grpc if endpoint.is_empty() => "http://localhost:4317".into(),
            OtlpProtocol::Grpc => endpoint.to_owned(),
        }
    }

    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.sampling_ratio.is_finite() && (0.0..=1.0).contains(&self.sampling_ratio)) {
            problems.push(format!(
                "tracing.sampling_ratio: {} is out of range (0.0–1.0, e.g. 0.1 records one new trace in ten)",
                self.sampling_ratio
            ));
        }
        let endpoint = self.endpoint.trim();
        if !endpoint.is_empty()
            && (!(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                || endpoint.parse::<axum::http::Uri>().is_err())
        {
            problems.push(format!(
                "tracing.endpoint: '{endpoint}' is not an http:// or https:// URL of an OTLP collector (e.g. http://collector:4318)"
            ));
        }
        if self.service_name.trim().is_empty() {
            problems.push("tracing.service_name: must not be empty".into());
        }
        if !(1..=120).contains(&self.export_timeout_secs) {
            problems.push(format!(
                "tracing.export_timeout_secs: {} is out of range (1–120)",
                self.export_timeout_secs
            ));
        }
        problems
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (port 4318).
    Http,
    /// OTLP/gRPC (port 4317).
    Grpc,
}
