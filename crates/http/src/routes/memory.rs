//! Memories (yours and the tenant's shared ones), documents, and hybrid
//! search over both.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use karen_app::memory::{DocumentUpload, MemoryInput, MemoryListScope, Passage, RecalledMemory};
use karen_domain::library::{Document, StoredChunk};
use karen_domain::memory::Memory;
use karen_domain::{DocumentId, Error, MemoryId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::views::Paged;
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, path_id, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_memories, create_memory, forget_my_memories))
        .routes(routes!(get_memory, update_memory, delete_memory))
        .routes(routes!(search_memories))
        .routes(routes!(list_documents, upload_document))
        .routes(routes!(get_document, delete_document))
        .routes(routes!(document_chunks))
        .routes(routes!(search))
}

/// A memory.
#[derive(Serialize, ToSchema)]
pub(crate) struct MemoryView {
    id: Uuid,
    /// Shared by the whole tenant (otherwise yours alone).
    shared: bool,
    /// fact, preference, episode or instruction.
    kind: String,
    content: String,
    /// 1 to 10.
    importance: u8,
    /// short, medium, long or pinned: how fast it fades when not recalled.
    tier: String,
    /// The conversation (and message) it was learned from.
    source_conversation_id: Option<Uuid>,
    source_message_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    last_recalled_at: Option<OffsetDateTime>,
}

impl From<Memory> for MemoryView {
    fn from(m: Memory) -> Self {
        Self {
            id: m.id.as_uuid(),
            shared: m.owner.is_none(),
            kind: m.kind.as_str().into(),
            content: m.content.into(),
            importance: m.importance.get(),
            tier: m.tier.as_str().into(),
            source_conversation_id: m.provenance.map(|p| p.conversation_id.as_uuid()),
            source_message_id: m
                .provenance
                .and_then(|p| p.message_id)
                .map(|id| id.as_uuid()),
            created_at: m.created_at,
            updated_at: m.updated_at,
            last_recalled_at: m.last_recalled_at,
        }
    }
}

/// A memory to create, or changes (absent fields stay).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemoryBody {
    /// 1 to 2,000 characters.
    content: Option<String>,
    /// fact (default), preference, episode or instruction.
    kind: Option<String>,
    /// 1 to 10 (default 5).
    importance: Option<u8>,
    /// short, medium, long (default) or pinned.
    tier: Option<String>,
    /// On creation: shared with the whole tenant (needs `tenant:manage`).
    #[serde(default)]
    shared: bool,
}

impl From<MemoryBody> for MemoryInput {
    fn from(b: MemoryBody) -> Self {
        Self {
            content: b.content,
            kind: b.kind,
            importance: b.importance,
            tier: b.tier,
            shared: b.shared,
        }
    }
}

/// Which memories to list, and the page.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct MemoryListParams {
    /// all (yours and shared; default), private (yours) or shared.
    scope: Option<String>,
    /// The `next_cursor` of the previous page.
    after: Option<String>,
    /// Items per page (1–200, default 50).
    limit: Option<u32>,
}

/// Memories you can see: your own and the tenant's shared ones.
#[utoipa::path(get, path = "/v1/memories", tag = "memory", params(MemoryListParams),
    security(("bearer" = ["memory:read"])), responses((status = 200, body = Paged<MemoryView>)))]
async fn list_memories(
    State(state): State<AppState>,
    auth: Authorized<perm::MemoryRead>,
    ApiQuery(params): ApiQuery<MemoryListParams>,
) -> ApiResult<Json<Paged<MemoryView>>> {
    let scope = params
        .scope
        .as_deref()
        .map(MemoryListScope::parse)
        .transpose()?
        .unwrap_or_default();
    let (memories, next) = state
        .services
        .memory
        .memories
        .list(&auth.ctx, scope, params.after.as_deref(), params.limit)
        .await?;
    Ok(Json(Paged {
        items: memories.into_iter().map(Into::into).collect(),
        next_cursor: next.map(|id| id.to_string()),
    }))
}

/// Remembers something (yours; shared ones need `tenant:manage`). An exact
/// duplicate is merged into the existing memory (200 instead of 201).
#[utoipa::path(post, path = "/v1/memories", tag = "memory", request_body = MemoryBody,
    security(("bearer" = ["memory:write"])),
    responses((status = 201, body = MemoryView), (status = 200, body = MemoryView, description = "merged into an existing identical memory")))]
async fn create_memory(
    State(state): State<AppState>,
    auth: Authorized<perm::MemoryWrite>,
    ApiJson(body): ApiJson<MemoryBody>,
) -> ApiResult<(StatusCode, Json<MemoryView>)> {
    let (memory, created) = state
        .services
        .memory
        .memories
        .create(&auth.ctx, body.into())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(memory.into())))
}

/// How many memories were forgotten.
#[derive(Serialize, ToSchema)]
pub(crate) struct ForgottenView {
    deleted: u64,
}

/// Forgets everything Karen remembers about you (your private memories).
#[utoipa::path(delete, path = "/v1/memories", tag = "memory", security(("bearer" = ["memory:write"])),
    responses((status = 200, body = ForgottenView)))]
async fn forget_my_memories(
    State(state): State<AppState>,
    auth: Authorized<perm::MemoryWrite>,
) -> ApiResult<Json<ForgottenView>> {
    let deleted = state.services.memory.memories.forget_me(&auth.ctx).await?;
    Ok(Json(ForgottenView { deleted }))
}

/// One memory you can see.
#[utoipa::path(get, path = "/v1/memories/{memory_id}", tag = "memory", params(("memory_id" = Uuid, Path)),
    security(("bearer" = ["memory:read"])),
    responses((status = 200, body = MemoryView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such memory visible to you")))]
async fn get_memory(
    State(state): State<AppState>,
    auth: Authorized<perm::MemoryRead>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<MemoryView>> {
    let id: MemoryId = path_id(&id)?;
    Ok(Json(
        state
            .services
            .memory
            .memories
            .get(&auth.ctx, id)
            .await?
            .into(),
    ))
}

/// Changes a memory (yours; shared ones need `tenant:manage`).
#[utoipa::path(patch, path = "/v1/memories/{memory_id}", tag = "memory", params(("memory_id" = Uuid, Path)),
    request_body = MemoryBody, security(("bearer" = ["memory:write"])),
    responses((status = 200, body = MemoryView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such memory visible to you")))]
async fn update_memory(
    State(state): State<AppState>,
    auth: Authorized<perm::MemoryWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<MemoryBody>,
) -> ApiResult<Json<MemoryView>> {
    let id: MemoryId = path_id(&id)?;
    let memory = state
        .services
        .memory
        .memories
        .update(&auth.ctx, id, body.into())
        .await?;
    Ok(Json(memory.into()))
}

/// Forgets a memory (from the store and every index).
#[utoipa::path(delete, path = "/v1/memories/{memory_id}", tag = "memory", params(("memory_id" = Uuid, Path)),
    security(("bearer" = ["memory:write"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such memory visible to you")))]
async fn delete_memory(
    State(state): State<AppState>,
    auth: Authorized<perm::MemoryWrite>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: MemoryId = path_id(&id)?;
    state.services.memory.memories.delete(&auth.ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A search.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchBody {
    /// Plain words (never query syntax), 1 to 2,000 characters.
    query: String,
    /// Results wanted (1–50, default 5).
    limit: Option<usize>,
}

impl SearchBody {
    fn checked(&self) -> Result<(&str, usize), Error> {
        let query = self.query.trim();
        if query.is_empty() || query.chars().count() > 2_000 {
            return Err(Error::invalid(
                Some("query"),
                "query must be 1 to 2,000 characters",
            ));
        }
        let limit = self.limit.unwrap_or(5);
        if !(1..=50).contains(&limit) {
            return Err(Error::invalid(
                Some("limit"),
                "limit must be between 1 and 50",
            ));
        }
        Ok((query, limit))
    }
}

/// A memory that matched.
#[derive(Serialize, ToSchema)]
pub(crate) struct RecalledMemoryView {
    memory: MemoryView,
    /// Relevance × importance × freshness, 0 to 1.
    score: f64,
}

impl From<RecalledMemory> for RecalledMemoryView {
    fn from(r: RecalledMemory) -> Self {
        Self {
            memory: r.memory.into(),
            score: r.score,
        }
    }
}

/// Your memories (and shared ones) that match, best first.
#[utoipa::path(post, path = "/v1/memories/search", tag = "memory", request_body = SearchBody,
    security(("bearer" = ["memory:read"])), responses((status = 200, body = Vec<RecalledMemoryView>)))]
async fn search_memories(
    State(state): State<AppState>,
    auth: Authorized<perm::MemoryRead>,
    ApiJson(body): ApiJson<SearchBody>,
) -> ApiResult<Json<Vec<RecalledMemoryView>>> {
    let (query, limit) = body.checked()?;
    let found = state
        .services
        .memory
        .memories
        .search(&auth.ctx, query, limit)
        .await?;
    Ok(Json(found.into_iter().map(Into::into).collect()))
}

/// A document.
#[derive(Serialize, ToSchema)]
pub(crate) struct DocumentView {
    id: Uuid,
    title: String,
    file_name: Option<String>,
    /// text, markdown, html or pdf.
    format: String,
    size_bytes: u64,
    /// Hex SHA-256 of the uploaded file.
    sha256: String,
    /// Roles that may read it; empty: everyone in the tenant.
    access_roles: Vec<String>,
    /// Passages it was cut into.
    chunk_count: u32,
    uploaded_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<Document> for DocumentView {
    fn from(d: Document) -> Self {
        Self {
            id: d.id.as_uuid(),
            title: d.title.into(),
            file_name: d.file_name,
            format: d.format.as_str().into(),
            size_bytes: d.size_bytes,
            sha256: d.sha256,
            access_roles: d
                .access_roles
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            chunk_count: d.chunk_count,
            uploaded_by: d.uploaded_by.map(|u| u.as_uuid()),
            created_at: d.created_at,
        }
    }
}

/// The page of documents.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DocumentListParams {
    after: Option<String>,
    limit: Option<u32>,
}

/// Documents you may read.
#[utoipa::path(get, path = "/v1/documents", tag = "memory", params(DocumentListParams),
    security(("bearer" = ["documents:read"])), responses((status = 200, body = Paged<DocumentView>)))]
async fn list_documents(
    State(state): State<AppState>,
    auth: Authorized<perm::DocumentsRead>,
    ApiQuery(params): ApiQuery<DocumentListParams>,
) -> ApiResult<Json<Paged<DocumentView>>> {
    let (documents, next) = state
        .services
        .memory
        .documents
        .list(&auth.ctx, params.after.as_deref(), params.limit)
        .await?;
    Ok(Json(Paged {
        items: documents.into_iter().map(Into::into).collect(),
        next_cursor: next.map(|id| id.to_string()),
    }))
}

/// How to file an upload.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadParams {
    /// The document's title (default: its own title, then the file name).
    title: Option<String>,
    /// The file's name; its extension names the format when the
    /// Content-Type does not.
    file_name: Option<String>,
    /// Comma-separated roles that may read it (default: everyone in the tenant).
    roles: Option<String>,
}

/// Uploads a document: the request body is the file, its Content-Type one of
/// text/plain, text/markdown, text/html, application/pdf. It is read, cut
/// into passages and indexed before the answer; a file that cannot be read
/// is refused and nothing is stored.
#[utoipa::path(post, path = "/v1/documents", tag = "memory", params(UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file"),
    security(("bearer" = ["documents:write"])),
    responses((status = 201, body = DocumentView),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json", description = "unsupported, damaged or empty file")))]
async fn upload_document(
    State(state): State<AppState>,
    auth: Authorized<perm::DocumentsWrite>,
    ApiQuery(params): ApiQuery<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<DocumentView>)> {
    let limit = state.config.document_limit;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Error::invalid(
            Some("file"),
            format!("the document is larger than {limit} bytes, the most accepted"),
        )
    })?;
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let upload = DocumentUpload {
        bytes: bytes.to_vec(),
        media_type,
        file_name: params.file_name,
        title: params.title,
        access_roles: params
            .roles
            .as_deref()
            .map(|r| {
                r.split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let document = state
        .services
        .memory
        .documents
        .upload(&auth.ctx, upload)
        .await?;
    Ok((StatusCode::CREATED, Json(document.into())))
}

/// One document you may read.
#[utoipa::path(get, path = "/v1/documents/{document_id}", tag = "memory", params(("document_id" = Uuid, Path)),
    security(("bearer" = ["documents:read"])),
    responses((status = 200, body = DocumentView),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such document readable by you")))]
async fn get_document(
    State(state): State<AppState>,
    auth: Authorized<perm::DocumentsRead>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DocumentView>> {
    let id: DocumentId = path_id(&id)?;
    Ok(Json(
        state
            .services
            .memory
            .documents
            .get(&auth.ctx, id)
            .await?
            .into(),
    ))
}

/// Deletes a document and its passages from the store and every index.
#[utoipa::path(delete, path = "/v1/documents/{document_id}", tag = "memory", params(("document_id" = Uuid, Path)),
    security(("bearer" = ["documents:write"])),
    responses((status = 204),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such document readable by you")))]
async fn delete_document(
    State(state): State<AppState>,
    auth: Authorized<perm::DocumentsWrite>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id: DocumentId = path_id(&id)?;
    state
        .services
        .memory
        .documents
        .delete(&auth.ctx, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A passage of a document.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChunkView {
    id: Uuid,
    /// Position in the document, from 0.
    ordinal: u32,
    /// The headings it is under (`Install > Linux`).
    heading: Option<String>,
    text: String,
}

impl From<StoredChunk> for ChunkView {
    fn from(c: StoredChunk) -> Self {
        Self {
            id: c.id.as_uuid(),
            ordinal: c.ordinal,
            heading: c.heading,
            text: c.text,
        }
    }
}

/// The passages a document was cut into, in order.
#[utoipa::path(get, path = "/v1/documents/{document_id}/chunks", tag = "memory", params(("document_id" = Uuid, Path)),
    security(("bearer" = ["documents:read"])),
    responses((status = 200, body = Vec<ChunkView>),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "no such document readable by you")))]
async fn document_chunks(
    State(state): State<AppState>,
    auth: Authorized<perm::DocumentsRead>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<ChunkView>>> {
    let id: DocumentId = path_id(&id)?;
    let chunks = state
        .services
        .memory
        .documents
        .chunks(&auth.ctx, id)
        .await?;
    Ok(Json(chunks.into_iter().map(Into::into).collect()))
}

/// A passage that matched a search.
#[derive(Serialize, ToSchema)]
pub(crate) struct PassageView {
    document_id: Uuid,
    document_title: String,
    chunk_id: Uuid,
    /// Position of the passage in its document, from 0.
    ordinal: u32,
    heading: Option<String>,
    text: String,
    /// Fused rank score, 0 to 1.
    score: f64,
}

impl From<Passage> for PassageView {
    fn from(p: Passage) -> Self {
        Self {
            document_id: p.document_id.as_uuid(),
            document_title: p.document_title,
            chunk_id: p.chunk_id.as_uuid(),
            ordinal: p.ordinal,
            heading: p.heading,
            text: p.text,
            score: p.score,
        }
    }
}

/// What a hybrid search found.
#[derive(Serialize, ToSchema)]
pub(crate) struct SearchView {
    memories: Vec<RecalledMemoryView>,
    passages: Vec<PassageView>,
}

/// Hybrid search (vector and BM25, fused by reciprocal rank) over your
/// memories, the tenant's shared memories and the documents you may read.
#[utoipa::path(post, path = "/v1/search", tag = "memory", request_body = SearchBody,
    security(("bearer" = ["documents:read"])), responses((status = 200, body = SearchView)))]
async fn search(
    State(state): State<AppState>,
    auth: Authorized<perm::DocumentsRead>,
    ApiJson(body): ApiJson<SearchBody>,
) -> ApiResult<Json<SearchView>> {
    let (query, limit) = body.checked()?;
    let recall = state
        .services
        .memory
        .retriever
        .search_visible(&auth.ctx, query, limit)
        .await?;
    Ok(Json(SearchView {
        memories: recall.memories.into_iter().map(Into::into).collect(),
        passages: recall.passages.into_iter().map(Into::into).collect(),
    }))
}
