//! Liveness, readiness and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Serves the finished document at `/openapi.json`.
pub(crate) fn openapi_route(document: utoipa::openapi::OpenApi) -> axum::Router<AppState> {
    let body = document.to_json().unwrap_or_else(|_| "{}".to_owned());
    axum::Router::new().route(
        "/openapi.json",
        get(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    )
}

/// `GET /metrics`: the Prometheus exposition of `source`.
pub(crate) fn metrics_route<S: Clone + Send + Sync + 'static>(
    source: std::sync::Arc<dyn crate::MetricsSource>,
) -> axum::routing::MethodRouter<S> {
    get(move || {
        let source = source.clone();
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                source.render(),
            )
        }
    })
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok` when the process answers.
    status: &'static str,
}

/// The process is alive (no dependency is checked).
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// One dependency's state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Component {
    name: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// The SQL backend (`sqlite` or `postgres`).
    backend: &'static str,
    components: Vec<Component>,
}

/// Every store this process needs answers; 503 names the failing component.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "system",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness, description = "a component is unavailable"))
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let components: Vec<Component> = state
        .services
        .health
        .readiness()
        .await
        .into_iter()
        .map(|c| Component {
            name: c.name,
            ok: c.ok,
            detail: c.detail,
        })
        .collect();
    let ready = components.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    for component in components.iter().filter(|c| !c.ok) {
        tracing::warn!(component = component.name, detail = ?component.detail, "readiness check failed");
    }
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        backend: state.services.health.backend(),
        components,
    };
    (status, Json(body)).into_response()
}
