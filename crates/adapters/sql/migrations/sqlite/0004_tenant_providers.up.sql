-- Model providers and aliases a tenant configures on top of the platform's.
-- The credential is sealed like message content (karen-sql `content.rs`).

CREATE TABLE tenant_providers (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    id BLOB NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('openai', 'anthropic')),
    base_url TEXT NOT NULL,
    api_key BLOB,
    models TEXT NOT NULL,
    position INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE model_aliases (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    alias TEXT NOT NULL,
    target TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, alias)
);
