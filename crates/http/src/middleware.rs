//! The request path: request id → trace span → security headers → timeout →
//! (handler, which authenticates and authorises through its extractors) →
//! one structured log line per request.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::AppState;
use crate::error::ApiError;

/// The request-id header, accepted from clients (sanitised) and echoed.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT_REQUEST_ID: String;
}

/// The id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

/// Accepts a client's request id if it is short and plain; otherwise makes one.
fn request_id_of(request: &Request) -> String {
    request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// Wraps every request: assigns the request id, opens the request span (whose
/// fields appear on every log line of the request), applies the timeout, adds
/// security headers, and logs one line when the response is ready.
pub async fn request_envelope(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let in_flight = InFlight::start();
    let request_id = request_id_of(&request);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        request_id = %request_id,
        method = %method,
        route = %route,
        http.response.status_code = tracing::field::Empty,
        tenant_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
    );
    continue_remote_trace(&span, request.headers());
    let timeout = state.config.request_timeout;
    let id_for_task = request_id.clone();
    let client = crate::extract::client_info(
        request.headers(),
        request.extensions(),
        state.config.trusted_proxy_hops,
    );
    let audit_context = karen_app::audit::RequestInfo {
        ip: client.ip,
        user_agent: client.user_agent,
        request_id: Some(request_id.clone()),
    };
    let mut response = CURRENT_REQUEST_ID
        .scope(id_for_task, async move {
            let handled = karen_app::audit::with_request(audit_context, next.run(request));
            match tokio::time::timeout(timeout, handled).await {
                Ok(response) => response,
                Err(_) => ApiError::http(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request_timeout",
                    format!(
                        "the request took longer than {} seconds and was abandoned",
                        timeout.as_secs()
                    ),
                )
                .into_response(),
            }
        })
        .instrument(span.clone())
        .await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID, value);
    }
    security_headers(headers, state.config.hsts);
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    let elapsed = started.elapsed();
    drop(in_flight);
    record_request(&route, &method, status, elapsed);
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, latency_ms, "request completed");
        } else {
            tracing::info!(status, latency_ms, "request completed");
        }
    });
    response
}

/// Makes `span` a child of the caller's span when the request carries a W3C
/// `traceparent` (and `tracestate`); without one the span starts a new trace.
fn continue_remote_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    struct Headers<'a>(&'a axum::http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|value| value.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(HeaderName::as_str).collect()
        }
    }
    let parent =
        opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: nothing to join then.
        let _ = span.set_parent(parent);
    }
}

/// Counts a request in flight until dropped.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!(names::HTTP_IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(names::HTTP_IN_FLIGHT).decrement(1.0);
    }
}

/// Metric names of the request path (see `deploy/metrics.txt`).
pub mod names {
    pub const HTTP_REQUESTS: &str = "karen_http_requests_total";
    pub const HTTP_DURATION: &str = "karen_http_request_duration_seconds";
    pub const HTTP_IN_FLIGHT: &str = "karen_http_requests_in_flight";
}

/// One finished request, by route template (never the raw path), method and
/// status. A streamed response counts when its headers are sent.
fn record_request(
    route: &str,
    method: &axum::http::Method,
    status: u16,
    elapsed: std::time::Duration,
) {
    let (route, method) = (route.to_owned(), method.as_str().to_owned());
    metrics::counter!(names::HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route, "method" => method)
        .record(elapsed.as_secs_f64());
}

/// The headers every response carries (errors, 404s and CORS preflights
/// included). Karen serves JSON and event streams only, so the content
/// security policy allows nothing at all and no page may frame a response.
pub const SECURITY_HEADERS: [(&str, &str); 7] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=(), interest-cohort=()",
    ),
    // API responses carry tokens and tenant data: never cache them (a handler
    // that sets its own Cache-Control keeps it).
    ("cache-control", "no-store"),
];

/// The `Strict-Transport-Security` value sent when HSTS is on.
pub const HSTS_VALUE: &str = "max-age=31536000; includeSubDomains";

fn security_headers(headers: &mut axum::http::HeaderMap, hsts: bool) {
    for (name, value) in SECURITY_HEADERS {
        headers
            .entry(HeaderName::from_static(name))
            .or_insert(HeaderValue::from_static(value));
    }
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS_VALUE),
        );
    }
}

/// CORS for browsers on the origins in `allowed` (exact `scheme://host[:port]`
/// strings, never a wildcard). `None` when the list is empty: then no CORS
/// header is ever sent and browsers on other origins cannot read responses.
/// Karen authenticates with the `Authorization` header, never cookies, so
/// `Access-Control-Allow-Credentials` is not sent: a page on an allowed origin
/// must hold a token itself, and ambient browser credentials never ride along.
pub fn cors_layer(allowed: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::Method;
    use tower_http::cors::{AllowOrigin, CorsLayer};

    let origins: Vec<HeaderValue> = allowed
        .iter()
        .filter(|origin| origin.as_str() != "*")
        .filter_map(|origin| HeaderValue::from_str(origin.trim_end_matches('/')).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                REQUEST_ID,
            ])
            .expose_headers([
                REQUEST_ID,
                header::RETRY_AFTER,
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
            ])
            .allow_credentials(false)
            .max_age(Duration::from_secs(600)),
    )
}

/// 404 for unknown routes, as a problem.
pub async fn not_found() -> Response {
    ApiError::http(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "there is no such endpoint; see /openapi.json",
    )
    .into_response()
}

/// 405 for a known route with the wrong method, as a problem.
pub async fn method_not_allowed() -> Response {
    ApiError::http(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
    .into_response()
}

/// 500 for a panic (never expected: the code has no panic paths; this is the net).
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("handler panicked");
    ApiError::http(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal error",
    )
    .into_response()
}

/// How long in-flight requests get to finish after a shutdown signal.
pub fn drain_deadline(grace: Duration) -> Duration {
    grace.max(Duration::from_secs(1))
}
