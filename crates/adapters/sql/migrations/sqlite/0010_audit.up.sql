-- The tamper-evident audit trail (see the PostgreSQL migration for the
-- design). SQLite serialises writers, so a tenant's chain stays linear by
-- itself; `audit_heads` still holds each chain's newest (seq, hash) so an
-- append reads one row. The store exposes no update or delete of audit rows;
-- triggers refuse them anyway, except while the tenant is being deleted.

CREATE TABLE audit_events (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    seq INTEGER NOT NULL CHECK (seq > 0),
    at INTEGER NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_user_id TEXT,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    outcome TEXT NOT NULL,
    ip TEXT,
    user_agent TEXT,
    request_id TEXT,
    diff TEXT,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_by_time ON audit_events (tenant_id, at);
CREATE INDEX audit_events_by_action ON audit_events (tenant_id, action, seq);

CREATE TABLE audit_heads (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (tenant_id)
);

CREATE TABLE audit_checkpoints (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    signed_at INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    WHEN NOT EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id AND status = 'deleting')
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    WHEN NOT EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id AND status = 'deleting')
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
