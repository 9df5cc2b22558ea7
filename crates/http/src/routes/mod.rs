//! Routes, grouped by area. Each handler extracts, calls one service method
//! and maps the result; its `#[utoipa::path]` is its OpenAPI entry.

mod api_keys;
pub(crate) mod audit;
mod auth;
mod budgets;
mod compliance;
mod conversations;
mod insights;
mod memory;
mod mfa;
mod openai;
mod openai_embeddings;
mod personas;
mod platform;
pub(crate) mod privacy;
mod providers;
mod rate_limits;
mod retention;
mod roles;
mod scim;
mod scim_discovery;
pub(crate) mod scim_model;
mod sessions;
mod sso;
mod sso_saml;
pub(crate) mod system;
mod tenant;
mod usage;
mod users;
mod views;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// Every API route with its OpenAPI description.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(system::routes())
        .merge(auth::routes())
        .merge(sessions::routes())
        .merge(mfa::routes())
        .merge(sso::routes())
        .merge(sso_saml::routes())
        .merge(users::routes())
        .merge(roles::routes())
        .merge(api_keys::routes())
        .merge(tenant::routes())
        .merge(platform::routes())
        .merge(conversations::routes())
        .merge(personas::routes())
        .merge(memory::routes())
        .merge(usage::routes())
        .merge(openai::routes())
        .merge(budgets::routes())
        .merge(providers::routes())
        .merge(insights::routes())
        .merge(rate_limits::routes())
        .merge(audit::routes())
        .merge(compliance::routes())
        .merge(privacy::routes())
        .merge(retention::routes())
        .merge(scim::routes())
}
