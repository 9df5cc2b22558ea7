-- Retention: each tenant's policy (maximum ages in days; NULL keeps forever;
-- no row: the platform defaults), the last enforcement run (counts only,
-- never content), and legal holds (a lifted hold keeps its row, with who
-- lifted it and when).

CREATE TABLE retention_policies (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    conversations_days INTEGER,
    memories_days INTEGER,
    documents_days INTEGER,
    usage_days INTEGER,
    audit_days INTEGER,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id)
);

CREATE TABLE retention_runs (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    at BIGINT NOT NULL,
    conversations BIGINT NOT NULL,
    memories BIGINT NOT NULL,
    documents BIGINT NOT NULL,
    usage_records BIGINT NOT NULL,
    audit_events BIGINT NOT NULL,
    held BIGINT NOT NULL,
    PRIMARY KEY (tenant_id)
);

CREATE TABLE legal_holds (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    id UUID NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('tenant', 'user', 'conversation')),
    -- The held user or conversation (NULL for a tenant hold). No foreign key:
    -- retention skips what it names, and lifting it later must still work.
    target_id UUID,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    lifted_by TEXT,
    lifted_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX legal_holds_active ON legal_holds (tenant_id, lifted_at);

ALTER TABLE retention_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON retention_policies
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
ALTER TABLE retention_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON retention_runs
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
ALTER TABLE legal_holds ENABLE ROW LEVEL SECURITY;
ALTER TABLE legal_holds FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON legal_holds
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

-- The two SECURITY DEFINER functions of 0010 remove audit rows with the
-- owner's rights. PostgreSQL lets PUBLIC execute a new function by default,
-- so any role that can connect (a reporting user, a read replica's role)
-- could have removed a prefix or, during a deletion, a whole trail. Only the
-- application role needs them: migrate grants it EXECUTE by name
-- (karen_sql::SqlStore::grant_app_role), everyone else loses it here.
REVOKE EXECUTE ON FUNCTION karen_audit_drop_prefix(UUID, BIGINT) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION karen_audit_purge_tenant(UUID, TEXT) FROM PUBLIC;
