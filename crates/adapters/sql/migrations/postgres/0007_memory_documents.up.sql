-- Long-term memories, documents and their chunks, and the embedding cache.
-- These rows are the source of truth the vector and text indexes are derived
-- from (`karen index rebuild`). Memory and chunk text is a byte string written
-- by one function (karen-sql `content.rs`), as message content is.

CREATE TABLE memories (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    id UUID NOT NULL,
    -- NULL: shared by the whole tenant; otherwise private to this user.
    owner_user_id UUID,
    kind TEXT NOT NULL CHECK (kind IN ('fact', 'preference', 'episode', 'instruction')),
    content BYTEA NOT NULL,
    -- Exact duplicates (same owner, same case-folded text) share this hash.
    content_hash TEXT NOT NULL,
    importance INTEGER NOT NULL CHECK (importance BETWEEN 1 AND 10),
    tier TEXT NOT NULL CHECK (tier IN ('short', 'medium', 'long', 'pinned')),
    source_conversation_id UUID,
    source_message_id UUID,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_recalled_at BIGINT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, content_hash),
    FOREIGN KEY (tenant_id, owner_user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX memories_by_owner ON memories (tenant_id, owner_user_id, id);

CREATE TABLE documents (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    id UUID NOT NULL,
    uploaded_by UUID,
    title TEXT NOT NULL,
    file_name TEXT,
    format TEXT NOT NULL CHECK (format IN ('text', 'markdown', 'html', 'pdf')),
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    -- JSON array of role names; empty: every member of the tenant may read it.
    access_roles TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE document_chunks (
    tenant_id UUID NOT NULL,
    id UUID NOT NULL,
    document_id UUID NOT NULL,
    ordinal INTEGER NOT NULL,
    heading BYTEA,
    content BYTEA NOT NULL,
    content_hash TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, document_id, ordinal),
    FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, id) ON DELETE CASCADE
);

-- Embedding vectors by model and content hash: the cache that spares the
-- embedding provider a second call for the same text, and what an index
-- rebuild reads instead of embedding everything again. Kept per tenant, so no
-- tenant can learn what another has embedded.
CREATE TABLE embeddings (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    model TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    dims INTEGER NOT NULL,
    vector BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, model, content_hash)
);

ALTER TABLE memories ENABLE ROW LEVEL SECURITY;
ALTER TABLE memories FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memories
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON documents
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

ALTER TABLE document_chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE document_chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON document_chunks
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

ALTER TABLE embeddings ENABLE ROW LEVEL SECURITY;
ALTER TABLE embeddings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON embeddings
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
