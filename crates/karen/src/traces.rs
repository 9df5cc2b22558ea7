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

use crate::config::{Config, OtlpProtocol};

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
