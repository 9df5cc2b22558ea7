-- The platform audit chain (see the PostgreSQL migration for the design):
-- operator actions that belong to no tenant, in tables of their own, one
-- chain with its own checkpoints. The store exposes no update or delete of
-- these rows, and triggers refuse them always (no tenant purge reaches them).

CREATE TABLE platform_audit_events (
    seq INTEGER NOT NULL PRIMARY KEY CHECK (seq > 0),
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
    pii_salt BLOB,
    redactions TEXT
);
CREATE INDEX platform_audit_events_by_time ON platform_audit_events (at);

CREATE TABLE platform_audit_head (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);

CREATE TABLE platform_audit_checkpoints (
    seq INTEGER NOT NULL PRIMARY KEY,
    hash BLOB NOT NULL,
    signed_at INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature BLOB NOT NULL
);

CREATE TRIGGER platform_audit_events_no_update BEFORE UPDATE ON platform_audit_events
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER platform_audit_events_no_delete BEFORE DELETE ON platform_audit_events
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER platform_audit_checkpoints_no_update BEFORE UPDATE ON platform_audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER platform_audit_checkpoints_no_delete BEFORE DELETE ON platform_audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
