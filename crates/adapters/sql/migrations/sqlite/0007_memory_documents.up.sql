-- Long-term memories, documents and their chunks, and the embedding cache.
-- These rows are the source of truth the vector and text indexes are derived
-- from (`karen index rebuild`). Memory and chunk text is a byte string written
-- by one function (karen-sql `content.rs`), as message content is.

CREATE TABLE memories (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    id BLOB NOT NULL,
    -- NULL: shared by the whole tenant; otherwise private to this user.
    owner_user_id BLOB,
    kind TEXT NOT NULL CHECK (kind IN ('fact', 'preference', 'episode', 'instruction')),
    content BLOB NOT NULL,
    -- Exact duplicates (same owner, same case-folded text) share this hash.
    content_hash TEXT NOT NULL,
    importance INTEGER NOT NULL CHECK (importance BETWEEN 1 AND 10),
    tier TEXT NOT NULL CHECK (tier IN ('short', 'medium', 'long', 'pinned')),
    source_conversation_id BLOB,
    source_message_id BLOB,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_recalled_at INTEGER,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, content_hash),
    FOREIGN KEY (tenant_id, owner_user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX memories_by_owner ON memories (tenant_id, owner_user_id, id);

CREATE TABLE documents (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    id BLOB NOT NULL,
    uploaded_by BLOB,
    title TEXT NOT NULL,
    file_name TEXT,
    format TEXT NOT NULL CHECK (format IN ('text', 'markdown', 'html', 'pdf')),
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    -- JSON array of role names; empty: every member of the tenant may read it.
    access_roles TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE document_chunks (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    document_id BLOB NOT NULL,
    ordinal INTEGER NOT NULL,
    heading BLOB,
    content BLOB NOT NULL,
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
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    model TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    dims INTEGER NOT NULL,
    vector BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, model, content_hash)
);
