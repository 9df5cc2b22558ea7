//! Karen's HTTP API: axum routes grouped by area, one middleware stack,
//! problem+json errors, and the OpenAPI document generated from the handlers.

pub mod error;
pub mod extract;
pub mod middleware;
mod openapi;
pub mod rate_limit;
mod routes;

pub use routes::audit::audit_event_json;
pub use routes::privacy::user_export_json;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use karen_app::Services;
use tower_http::catch_panic::CatchPanicLayer;

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Largest accepted document upload, in bytes.
    pub document_limit: usize,
    /// How long a request may take before it is abandoned with a problem.
    pub request_timeout: Duration,
    /// How many reverse proxies in front of Karen append to `X-Forwarded-For`
    /// (0: use the peer address; never trust the header from the open internet).
    pub trusted_proxy_hops: usize,
    /// Send `Strict-Transport-Security` (when served over HTTPS).
    pub hsts: bool,
    /// Browser origins allowed to call the API (CORS); empty: none.
    pub cors_allowed_origins: Vec<String>,
    /// Serve `GET /metrics` on this router (off when metrics have a listener of their own).
    pub metrics: Option<Arc<dyn MetricsSource>>,
}

/// Renders the Prometheus exposition text (implemented by the binary, which
/// owns the recorder).
pub trait MetricsSource: Send + Sync + 'static {
    /// The whole `/metrics` body.
    fn render(&self) -> String;
}

impl std::fmt::Debug for dyn MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsSource")
    }
}

/// A router serving only `GET /metrics` (for a separate metrics listener).
pub fn metrics_router(source: Arc<dyn MetricsSource>) -> Router {
    Router::new().route("/metrics", routes::system::metrics_route(source))
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            document_limit: 20 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            trusted_proxy_hops: 0,
            hsts: false,
            cors_allowed_origins: Vec::new(),
            metrics: None,
        }
    }
}

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub config: Arc<HttpConfig>,
}

/// The whole application: every route, the middleware stack and `/openapi.json`.
pub fn router(services: Services, config: HttpConfig) -> Router {
    let (api, document) = routes::api().split_for_parts();
    let document = openapi::finish(document);
    let state = AppState {
        services,
        config: Arc::new(config.clone()),
    };
    let mut app = api.merge(routes::system::openapi_route(document));
    if let Some(source) = config.metrics.clone() {
        // Never behind tenant authentication: a scraper holds no credential.
        app = app.route("/metrics", routes::system::metrics_route(source));
    }
    app = app
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(axum::middleware::from_fn(rate_limit::rate_limit_headers))
        .layer(axum::middleware::from_fn(routes::scim_model::scim_errors));
    // Inside the envelope, so preflight answers carry the security headers too.
    if let Some(cors) = middleware::cors_layer(&config.cors_allowed_origins) {
        app = app.layer(cors);
    }
    app.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        middleware::request_envelope,
    ))
    .layer(CatchPanicLayer::custom(middleware::panic_response))
    .layer(DefaultBodyLimit::max(config.body_limit))
    .with_state(state)
}

/// The OpenAPI 3.1 document of every route (what `/openapi.json` serves).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::finish(routes::api().split_for_parts().1)
}
