-- Model providers and aliases a tenant configures on top of the platform's.
-- The credential is sealed like message content (karen-sql `content.rs`).

CREATE TABLE tenant_providers (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    id UUID NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('openai', 'anthropic')),
    base_url TEXT NOT NULL,
    api_key BYTEA,
    models JSONB NOT NULL,
    position INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE model_aliases (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    alias TEXT NOT NULL,
    target TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, alias)
);

ALTER TABLE tenant_providers ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_providers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_providers
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

ALTER TABLE model_aliases ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_aliases FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON model_aliases
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
