//! Documents: uploaded, read (text, Markdown, HTML, PDF), cut into
//! overlapping passages, stored and indexed in one transaction, and readable
//! by the whole tenant or only by holders of listed roles. Deleting one
//! removes its passages from the store and from every index.

use crate::audit::Record;
use std::sync::Arc;

use karen_domain::documents::{DocumentFormat, chunk_document};
use karen_domain::library::{Document, StoredChunk};
use karen_domain::page::PageRequest;
use karen_domain::permission::Permission;
use karen_domain::ports::{EntryAccess, EntryKey, EntryKind, TenantTx};
use karen_domain::values::{Label, RoleName, printable};
use karen_domain::{ChunkId, DocumentId, Error, Result, TenantContext, UserId};

use super::indexer::{IndexItem, Indexer};
use super::sha256_hex;
use crate::{Authority, Deps};

/// An upload.
#[derive(Debug, Clone, Default)]
pub struct DocumentUpload {
    pub bytes: Vec<u8>,
    /// The request's `Content-Type`, when it names a format.
    pub media_type: Option<String>,
    pub file_name: Option<String>,
    /// Defaults to the document's own title, then the file name.
    pub title: Option<String>,
    /// Roles that may read it; empty: the whole tenant.
    pub access_roles: Vec<String>,
}

/// The document service.
#[derive(Clone)]
pub struct DocumentService {
    deps: Arc<Deps>,
    indexer: Indexer,
}

/// The format of an upload: its media type when that names one Karen reads,
/// otherwise its file name's extension.
fn format_of(upload: &DocumentUpload) -> Result<DocumentFormat> {
    let generic = |media: &str| {
        let essence = media.split(';').next().unwrap_or_default().trim();
        essence.is_empty() || essence.eq_ignore_ascii_case("application/octet-stream")
    };
    match upload.media_type.as_deref() {
        Some(media) if !generic(media) => DocumentFormat::from_media_type(media)
            .ok_or_else(|| DocumentFormat::unsupported(&format!("'{}'", printable(media, 80)))),
        _ => match upload.file_name.as_deref() {
            Some(name) => DocumentFormat::from_file_name(name).ok_or_else(|| {
                DocumentFormat::unsupported(&format!("the file '{}'", printable(name, 80)))
            }),
            None => Err(Error::invalid(
                Some("file"),
                "say what the document is: send a Content-Type (text/plain, text/markdown, \
                 text/html, application/pdf) or a file_name with its extension",
            )),
        },
    }
}

fn file_name(name: Option<&str>) -> Result<Option<String>> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    // Only the last path component, as a label.
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    Label::parse(base)
        .map(|l| Some(l.as_str().to_owned()))
        .map_err(|_| {
            Error::invalid(
                Some("file_name"),
                "file_name must be 1 to 200 printable characters",
            )
        })
}

pub(super) fn chunk_item(document: &Document, chunk: &StoredChunk) -> IndexItem {
    IndexItem {
        key: EntryKey::new(EntryKind::Chunk, chunk.id.as_uuid()),
        access: EntryAccess {
            owner: None,
            roles: document.access_roles.clone(),
            document: Some(document.id.as_uuid()),
        },
        text: match &chunk.heading {
            // The heading path helps both indexes find the passage.
            Some(heading) if !chunk.text.starts_with(heading.as_str()) => {
                format!("{heading}\n{}", chunk.text)
            }
            _ => chunk.text.clone(),
        },
        content_hash: chunk.content_hash.clone(),
    }
}

impl DocumentService {
    pub(crate) fn new(deps: Arc<Deps>, indexer: Indexer) -> Self {
        Self { deps, indexer }
    }

    /// Whether the principal may read `document`: by its roles, or as a
    /// tenant admin.
    fn readable(ctx: &TenantContext, document: &Document) -> bool {
        ctx.require(Permission::TenantManage).is_ok()
            || document.readable_with(&ctx.principal().roles)
    }

    /// Reads, chunks, stores and indexes a document. Nothing is stored when
    /// any step fails.
    pub async fn upload(&self, ctx: &TenantContext, upload: DocumentUpload) -> Result<Document> {
        self.import(
            Authority::Member(ctx),
            Some(ctx.principal().user_id),
            upload,
        )
        .await
    }

    /// As [`upload`](Self::upload), on any authority (the CLI imports with
    /// the platform's), recording `uploaded_by` as the uploader.
    pub async fn import(
        &self,
        authority: Authority<'_>,
        uploaded_by: Option<UserId>,
        upload: DocumentUpload,
    ) -> Result<Document> {
        authority.require(Permission::DocumentsWrite)?;
        let limit = self.deps.search.max_document_bytes;
        if upload.bytes.len() > limit {
            return Err(Error::invalid(
                Some("file"),
                format!(
                    "the document is {} bytes; at most {limit} bytes are accepted",
                    upload.bytes.len()
                ),
            ));
        }
        let format = format_of(&upload)?;
        let file_name = file_name(upload.file_name.as_deref())?;
        let mut access_roles = Vec::new();
        for role in &upload.access_roles {
            let role = RoleName::parse(role.trim())?;
            if !access_roles.contains(&role) {
                access_roles.push(role);
            }
        }
        let extractor = self.deps.search.extractor.clone();
        let bytes = Arc::new(upload.bytes);
        let input = bytes.clone();
        let extracted = tokio::task::spawn_blocking(move || extractor.extract(format, &input))
            .await
            .map_err(|e| Error::internal(format!("document extraction task failed: {e}")))??;
        let title = match upload
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            Some(title) => Label::parse(title)?,
            None => extracted
                .title
                .as_deref()
                .and_then(|t| Label::parse(&printable(t, 200)).ok())
                .or_else(|| file_name.as_deref().and_then(|n| Label::parse(n).ok()))
                .unwrap_or(Label::parse("Untitled document")?),
        };
        let drafts = chunk_document(&extracted, &self.deps.search.chunking);
        if drafts.is_empty() {
            return Err(Error::invalid(Some("file"), "the file contains no text"));
        }
        let now = self.deps.clock.now();
        let document = Document {
            id: DocumentId::generate(),
            tenant_id: authority.tenant_id(),
            uploaded_by,
            title,
            file_name,
            format,
            size_bytes: bytes.len() as u64,
            sha256: sha256_hex(&[bytes.as_slice()]),
            access_roles,
            chunk_count: u32::try_from(drafts.len()).unwrap_or(u32::MAX),
            created_at: now,
            updated_at: now,
        };
        let chunks: Vec<StoredChunk> = drafts
            .into_iter()
            .map(|draft| StoredChunk {
                id: ChunkId::generate(),
                tenant_id: document.tenant_id,
                document_id: document.id,
                ordinal: draft.ordinal,
                content_hash: sha256_hex(&[draft.text.as_bytes()]),
                heading: draft.heading,
                text: draft.text,
            })
            .collect();
        let mut tx = self.deps.store.tenant(authority.scope()).await?;
        tx.documents().insert_document(&document).await?;
        for chunk in &chunks {
            tx.documents().insert_chunk(chunk).await?;
        }
        let audit = Record::new("document.create").target("document", document.id);
        self.deps.audit(&mut *tx, authority.actor(), audit).await?;
        let items = chunks.iter().map(|c| chunk_item(&document, c)).collect();
        if let Err(error) = self
            .indexer
            .index(tx.as_mut(), authority.tenant_id(), items)
            .await
        {
            // Whatever reached an index before the failure goes too.
            let keys: Vec<EntryKey> = chunks
                .iter()
                .map(|c| EntryKey::new(EntryKind::Chunk, c.id.as_uuid()))
                .collect();
            let _ = self.indexer.remove(authority.tenant_id(), &keys).await;
            return Err(error);
        }
        tx.commit().await?;
        Ok(document)
    }

    /// A page of the documents the caller may read, in id order.
    pub async fn list(
        &self,
        ctx: &TenantContext,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(Vec<Document>, Option<DocumentId>)> {
        ctx.require(Permission::DocumentsRead)?;
        let page = PageRequest::parse(after, limit)?;
        let mut after = page.after.map(DocumentId::from_uuid);
        let mut documents = Vec::new();
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        // Documents the caller may not read are skipped, so fetch until the
        // page is full or the list ends.
        loop {
            let batch = tx
                .documents()
                .list_documents(after, page.fetch_limit())
                .await?;
            let exhausted = (batch.len() as i64) < page.fetch_limit();
            after = batch.last().map(|d| d.id);
            documents.extend(batch.into_iter().filter(|d| Self::readable(ctx, d)));
            if exhausted || documents.len() > page.limit as usize {
                break;
            }
        }
        tx.commit().await?;
        self.deps
            .audit_read(ctx.scope(), Record::new("document.list"))
            .await?;
        let next = if documents.len() > page.limit as usize {
            documents.truncate(page.limit as usize);
            documents.last().map(|d| d.id)
        } else {
            None
        };
        Ok((documents, next))
    }

    /// One document the caller may read.
    pub async fn get(&self, ctx: &TenantContext, id: DocumentId) -> Result<Document> {
        ctx.require(Permission::DocumentsRead)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let document = tx.documents().document(id).await?;
        tx.commit().await?;
        let document = document
            .filter(|d| Self::readable(ctx, d))
            .ok_or(Error::NotFound("document"))?;
        let read = Record::new("document.read").target("document", id);
        self.deps.audit_read(ctx.scope(), read).await?;
        Ok(document)
    }

    /// A document's passages, in order.
    pub async fn chunks(&self, ctx: &TenantContext, id: DocumentId) -> Result<Vec<StoredChunk>> {
        let document = self.get(ctx, id).await?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let chunks = tx.documents().chunks_of(document.id).await?;
        tx.commit().await?;
        Ok(chunks)
    }

    /// Deletes a document, its passages and their index entries.
    pub async fn delete(&self, ctx: &TenantContext, id: DocumentId) -> Result<()> {
        ctx.require(Permission::DocumentsWrite)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let document = tx
            .documents()
            .document(id)
            .await?
            .filter(|d| Self::readable(ctx, d))
            .ok_or(Error::NotFound("document"))?;
        let keys = delete_document_rows(&mut *tx, document.id).await?;
        let audit = Record::new("document.delete").target("document", id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        self.indexer.remove(ctx.tenant_id(), &keys).await?;
        tx.commit().await
    }
}

/// Deletes a document and its passages in `tx`; returns the index entries of
/// the passages, which the caller removes before committing (user deletion
/// and retention alike).
pub(crate) async fn delete_document_rows(
    tx: &mut dyn TenantTx,
    id: DocumentId,
) -> Result<Vec<EntryKey>> {
    let keys = tx
        .documents()
        .chunks_of(id)
        .await?
        .iter()
        .map(|c| EntryKey::new(EntryKind::Chunk, c.id.as_uuid()))
        .collect();
    tx.documents().delete_document(id).await?;
    Ok(keys)
}
