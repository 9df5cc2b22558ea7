-- Retention: each tenant's policy (maximum ages in days; NULL keeps forever;
-- no row: the platform defaults), the last enforcement run (counts only,
-- never content), and legal holds (a lifted hold keeps its row, with who
-- lifted it and when).

CREATE TABLE retention_policies (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    conversations_days INTEGER,
    memories_days INTEGER,
    documents_days INTEGER,
    usage_days INTEGER,
    audit_days INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id)
);

CREATE TABLE retention_runs (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    at INTEGER NOT NULL,
    conversations INTEGER NOT NULL,
    memories INTEGER NOT NULL,
    documents INTEGER NOT NULL,
    usage_records INTEGER NOT NULL,
    audit_events INTEGER NOT NULL,
    held INTEGER NOT NULL,
    PRIMARY KEY (tenant_id)
);

CREATE TABLE legal_holds (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    id BLOB NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('tenant', 'user', 'conversation')),
    -- The held user or conversation (NULL for a tenant hold). No foreign key:
    -- a hold outlives nothing it covers, retention skips what it names.
    target_id BLOB,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    lifted_by TEXT,
    lifted_at INTEGER,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX legal_holds_active ON legal_holds (tenant_id, lifted_at);

-- Audit retention removes a prefix of a tenant's chain ending at a signed
-- checkpoint. The trigger now also lets through the deletion of an event that
-- a checkpoint at or after it covers (SQLite has no roles: the service is the
-- only writer, and removes whole prefixes ending exactly at a checkpoint so
-- that `karen audit verify` starts from it). Events after the newest
-- checkpoint can still never be deleted.
DROP TRIGGER audit_events_no_delete;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    WHEN NOT EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id AND status = 'deleting')
     AND NOT EXISTS (SELECT 1 FROM audit_checkpoints c
                      WHERE c.tenant_id = OLD.tenant_id AND c.seq >= OLD.seq)
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
