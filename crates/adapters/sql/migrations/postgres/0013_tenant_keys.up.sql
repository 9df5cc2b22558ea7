-- Per-tenant data keys for encryption at rest (envelope encryption). Each key
-- is stored wrapped (AES-256-GCM) under the master key named by master_key_id;
-- the clear key never reaches the database. A new version is made by
-- `karen keys rotate-tenant`; retired versions stay readable for rows that
-- still use them. Deleting the tenant deletes these rows (crypto-shredding).

CREATE TABLE tenant_keys (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    version INTEGER NOT NULL CHECK (version > 0),
    wrapped_key BYTEA NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    PRIMARY KEY (tenant_id, version)
);

ALTER TABLE tenant_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_keys
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
