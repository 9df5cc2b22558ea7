//! Personas: tenant-wide (managed with `tenant:manage`) or your own.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use karen_app::assistant::PersonaInput;
use karen_domain::PersonaId;
use karen_domain::chat::Persona;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Authorized, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_personas, create_persona))
        .routes(routes!(get_persona, update_persona, delete_persona))
}

/// A persona.
#[derive(Serialize, ToSchema)]
pub(crate) struct PersonaView {
    id: Uuid,
    name: String,
    /// Visible to everyone in the tenant (otherwise only to its owner).
    shared: bool,
    system_prompt: String,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<Persona> for PersonaView {
    fn from(p: Persona) -> Self {
        Self {
            id: p.id.as_uuid(),
            name: p.name.into(),
            shared: p.owner.is_none(),
            system_prompt: p.system_prompt,
            model: p.model,
            temperature: p.temperature,
            max_tokens: p.max_tokens,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A persona to create, or changes (absent fields stay; `null` clears).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersonaBody {
    name: Option<String>,
    /// At most 20,000 characters.
    system_prompt: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    model: Option<Option<String>>,
    /// 0 to 2.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<f64>)]
    temperature: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    max_tokens: Option<Option<u32>>,
    /// On creation: share with the whole tenant (needs `tenant:manage`).
    #[serde(default)]
    shared: bool,
}

impl From<PersonaBody> for PersonaInput {
    fn from(b: PersonaBody) -> Self {
        Self {
            name: b.name,
            system_prompt: b.system_prompt,
            model: b.model,
            temperature: b.temperature,
            max_tokens: b.max_tokens,
            shared: b.shared,
        }
    }
}

/// Tenant-wide personas and your own.
#[utoipa::path(get, path = "/v1/personas", tag = "assistant", security(("bearer" = ["chat:read"])),
    responses((status = 200, body = Vec<PersonaView>)))]
async fn list_personas(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatRead>,
) -> ApiResult<Json<Vec<PersonaView>>> {
    let personas = state.services.assistant.personas.list(&auth.ctx).await?;
    Ok(Json(personas.into_iter().map(Into::into).collect()))
}

/// Creates a persona (your own; shared ones need `tenant:manage`).
#[utoipa::path(post, path = "/v1/personas", tag = "assistant", request_body = PersonaBody, security(("bearer" = ["chat:write"])),
    responses((status = 201, body = PersonaView)))]
async fn create_persona(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatWrite>,
    ApiJson(body): ApiJson<PersonaBody>,
) -> ApiResult<(StatusCode, Json<PersonaView>)> {
    let persona = state
        .services
        .assistant
        .personas
        .create(&auth.ctx, body.into())
        .await?;
    Ok((StatusCode::CREATED, Json(persona.into())))
}

/// One persona visible to you.
#[utoipa::path(get, path = "/v1/personas/{persona_id}", tag = "assistant", params(("persona_id" = Uuid, Path)),
    security(("bearer" = ["chat:read"])),
    responses((status = 200, body = PersonaView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such persona visible to you")))]
async fn get_persona(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatRead>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<PersonaView>> {
    let id: PersonaId = path_id(&id)?;
    Ok(Json(
        state
            .services
            .assistant
            .personas
            .get(&auth.ctx, id)
            .await?
            .into(),
    ))
}

/// Changes a persona (your own; shared ones need `tenant:manage`).
#[utoipa::path(patch, path = "/v1/personas/{persona_id}", tag = "assistant", params(("persona_id" = Uuid, Path)),
    request_body = PersonaBody, security(("bearer" = ["chat:write"])),
    responses((status = 200, body = PersonaView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such persona visible to you")))]
async fn update_persona(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PersonaBody>,
) -> ApiResult<Json<PersonaView>> {
    let id: PersonaId = path_id(&id)?;
    Ok(Json(
        state
            .services
            .assistant
            .personas
            .update(&auth.ctx, id, body.into())
            .await?
            .into(),
    ))
}

/// Deletes a persona; conversations that used it continue without one.
#[utoipa::path(delete, path = "/v1/personas/{persona_id}", tag = "assistant", params(("persona_id" = Uuid, Path)),
    security(("bearer" = ["chat:write"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such persona visible to you")))]
async fn delete_persona(
    State(state): State<AppState>,
    auth: Authorized<perm::ChatWrite>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: PersonaId = path_id(&id)?;
    state
        .services
        .assistant
        .personas
        .delete(&auth.ctx, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
