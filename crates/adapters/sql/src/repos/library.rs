//! Documents, their chunks, and the embedding cache.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::documents::DocumentFormat;
use karen_domain::library::{Document, StoredChunk};
use karen_domain::ports::{DocumentRepo, EmbeddingRepo};
use karen_domain::values::{Label, RoleName};
use karen_domain::{ChunkId, DocumentId, Error, Result, TenantId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use super::i32_of;
use crate::conn::Row;
use crate::content::{KeyRing, Slot};
use crate::rows;
use crate::tenant::{SqlTenantTx, by_ids};

fn document(row: &Row) -> Result<Document> {
    let roles: Vec<String> = serde_json::from_str(&row.get::<String>("access_roles")?)
        .map_err(|e| Error::internal(format!("stored document access_roles: {e}")))?;
    Ok(Document {
        id: DocumentId::from_uuid(row.get("id")?),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        uploaded_by: row
            .get::<Option<Uuid>>("uploaded_by")?
            .map(UserId::from_uuid),
        title: Label::parse(&row.get::<String>("title")?)?,
        file_name: row.get("file_name")?,
        format: DocumentFormat::parse(&row.get::<String>("format")?)?,
        size_bytes: u64::try_from(row.get::<i64>("size_bytes")?).unwrap_or(0),
        sha256: row.get("sha256")?,
        access_roles: roles
            .iter()
            .map(|r| RoleName::parse(r))
            .collect::<Result<_>>()?,
        chunk_count: u32::try_from(row.get::<i32>("chunk_count")?).unwrap_or(0),
        created_at: rows::time(row, "created_at")?,
        updated_at: rows::time(row, "updated_at")?,
    })
}

fn chunk(row: &Row, keys: &KeyRing) -> Result<StoredChunk> {
    let tenant_id = TenantId::from_uuid(row.get("tenant_id")?);
    let id: Uuid = row.get("id")?;
    Ok(StoredChunk {
        id: ChunkId::from_uuid(id),
        tenant_id,
        document_id: DocumentId::from_uuid(row.get("document_id")?),
        ordinal: u32::try_from(row.get::<i32>("ordinal")?).unwrap_or(0),
        heading: row
            .get::<Option<Vec<u8>>>("heading")?
            .map(|bytes| keys.open(Slot::new("document_chunks", "heading", id), &bytes))
            .transpose()?,
        text: keys.open(
            Slot::new("document_chunks", "content", id),
            &row.get::<Vec<u8>>("content")?,
        )?,
        content_hash: row.get("content_hash")?,
    })
}

#[async_trait]
impl DocumentRepo for SqlTenantTx {
    async fn insert_document(&mut self, d: &Document) -> Result<()> {
        let roles: Vec<&str> = d.access_roles.iter().map(RoleName::as_str).collect();
        let roles = serde_json::to_string(&roles).map_err(Error::internal)?;
        let q = self
            .q("INSERT INTO documents (tenant_id, id, uploaded_by, title, file_name, format, size_bytes, \
                sha256, access_roles, chunk_count, created_at, updated_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
            .bind(d.id.as_uuid())
            .bind(d.uploaded_by.map(|u| u.as_uuid()))
            .bind(d.title.as_str().to_owned())
            .bind(d.file_name.clone())
            .bind(d.format.as_str())
            .bind(i64::try_from(d.size_bytes).unwrap_or(i64::MAX))
            .bind(d.sha256.clone())
            .bind(roles)
            .bind(i32_of(d.chunk_count))
            .bind(to_millis(d.created_at))
            .bind(to_millis(d.updated_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn insert_chunk(&mut self, c: &StoredChunk) -> Result<()> {
        let keys = self.sealing_keys().await?;
        let id = c.id.as_uuid();
        let heading = c
            .heading
            .as_deref()
            .map(|h| keys.seal(Slot::new("document_chunks", "heading", id), h))
            .transpose()?;
        let text = keys.seal(Slot::new("document_chunks", "content", id), &c.text)?;
        let q = self
            .q("INSERT INTO document_chunks (tenant_id, id, document_id, ordinal, heading, content, content_hash) \
                VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(c.id.as_uuid())
            .bind(c.document_id.as_uuid())
            .bind(i32_of(c.ordinal))
            .bind(heading)
            .bind(text)
            .bind(c.content_hash.clone());
        self.tx.execute(q).await.map(drop)
    }

    async fn document(&mut self, id: DocumentId) -> Result<Option<Document>> {
        let q = self
            .q("SELECT * FROM documents WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(document)
            .transpose()
    }

    async fn documents_by_ids(&mut self, ids: &[DocumentId]) -> Result<Vec<Document>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        // Documents hold no sealed content; the keys go unused.
        self.fetch_all_sealed_by_ids(by_ids!("documents"), &ids, |row, _| document(row))
            .await
    }

    async fn list_documents(
        &mut self,
        after: Option<DocumentId>,
        limit: i64,
    ) -> Result<Vec<Document>> {
        let q = self
            .q("SELECT * FROM documents WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3")
            .bind(after.map(|id| id.as_uuid()))
            .bind(limit);
        self.tx.fetch_all(q).await?.iter().map(document).collect()
    }

    async fn delete_document(&mut self, id: DocumentId) -> Result<bool> {
        // Chunks first: SQLite enforces the cascade only with foreign keys on.
        let q = self
            .q("DELETE FROM document_chunks WHERE tenant_id = $1 AND document_id = $2")
            .bind(id.as_uuid());
        self.tx.execute(q).await?;
        let q = self
            .q("DELETE FROM documents WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn chunk(&mut self, id: ChunkId) -> Result<Option<StoredChunk>> {
        let q = self
            .q("SELECT * FROM document_chunks WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.fetch_optional_sealed(q, chunk).await
    }

    async fn chunks_by_ids(&mut self, ids: &[ChunkId]) -> Result<Vec<StoredChunk>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        self.fetch_all_sealed_by_ids(by_ids!("document_chunks"), &ids, chunk)
            .await
    }

    async fn chunks_of(&mut self, document: DocumentId) -> Result<Vec<StoredChunk>> {
        let q = self
            .q("SELECT * FROM document_chunks WHERE tenant_id = $1 AND document_id = $2 ORDER BY ordinal")
            .bind(document.as_uuid());
        self.fetch_all_sealed(q, chunk).await
    }

    async fn list_chunks(
        &mut self,
        after: Option<ChunkId>,
        limit: i64,
    ) -> Result<Vec<StoredChunk>> {
        let q = self
            .q("SELECT * FROM document_chunks WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3")
            .bind(after.map(|id| id.as_uuid()))
            .bind(limit);
        self.fetch_all_sealed(q, chunk).await
    }
}

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_of(bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(Error::internal(
            "stored embedding is not a whole number of f32",
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

#[async_trait]
impl EmbeddingRepo for SqlTenantTx {
    async fn embedding(&mut self, model: &str, content_hash: &str) -> Result<Option<Vec<f32>>> {
        let q = self
            .q("SELECT vector FROM embeddings WHERE tenant_id = $1 AND model = $2 AND content_hash = $3")
            .bind(model.to_owned())
            .bind(content_hash.to_owned());
        match self.tx.fetch_optional(q).await? {
            Some(row) => vector_of(&row.get::<Vec<u8>>("vector")?).map(Some),
            None => Ok(None),
        }
    }

    async fn put_embedding(
        &mut self,
        model: &str,
        content_hash: &str,
        vector: &[f32],
        at: OffsetDateTime,
    ) -> Result<()> {
        let q = self
            .q("INSERT INTO embeddings (tenant_id, model, content_hash, dims, vector, created_at) \
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, model, content_hash) DO NOTHING")
            .bind(model.to_owned())
            .bind(content_hash.to_owned())
            .bind(i32::try_from(vector.len()).unwrap_or(i32::MAX))
            .bind(vector_bytes(vector))
            .bind(to_millis(at));
        self.tx.execute(q).await.map(drop)
    }
}
