-- The platform audit chain: operator actions that belong to no tenant
-- (tenant lifecycle, operator keys, platform settings, refused operator
-- keys). One hash chain with its own signed checkpoints, hashed and signed
-- under the nil UUID (karen_domain::audit::PLATFORM_CHAIN).
--
-- Tables of their own rather than a reserved tenant id in audit_events: these
-- rows are no tenant's data, so they carry no tenant_id; like operator_keys,
-- their row-level security policy admits only the platform transaction
-- (karen.scope = 'platform'), which no tenant principal is given, so a
-- tenant transaction sees no row of them. A tenant purge or retention run
-- cannot reach them, so the record of a tenant's deletion outlives the tenant.
--
-- Append-only as the tenant trail: the application role may only INSERT and
-- SELECT events and checkpoints (grant_app_role), and the trigger refuses
-- every UPDATE, DELETE and TRUNCATE (no function removes platform rows).

CREATE TABLE platform_audit_events (
    seq BIGINT NOT NULL PRIMARY KEY CHECK (seq > 0),
    at BIGINT NOT NULL,
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
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    pii_salt BYTEA,
    redactions TEXT
);
CREATE INDEX platform_audit_events_by_time ON platform_audit_events (at);

-- The chain's newest (seq, hash); its row lock serialises appends.
CREATE TABLE platform_audit_head (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);

CREATE TABLE platform_audit_checkpoints (
    seq BIGINT NOT NULL PRIMARY KEY,
    hash BYTEA NOT NULL,
    signed_at BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    signature BYTEA NOT NULL
);

CREATE TRIGGER platform_audit_events_append_only BEFORE UPDATE OR DELETE ON platform_audit_events
    FOR EACH ROW EXECUTE FUNCTION karen_audit_append_only();
CREATE TRIGGER platform_audit_events_no_truncate BEFORE TRUNCATE ON platform_audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION karen_audit_append_only();
CREATE TRIGGER platform_audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON platform_audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION karen_audit_append_only();
CREATE TRIGGER platform_audit_checkpoints_no_truncate BEFORE TRUNCATE ON platform_audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION karen_audit_append_only();

ALTER TABLE platform_audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE platform_audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_scope ON platform_audit_events
    USING (current_setting('karen.scope', true) = 'platform')
    WITH CHECK (current_setting('karen.scope', true) = 'platform');
ALTER TABLE platform_audit_head ENABLE ROW LEVEL SECURITY;
ALTER TABLE platform_audit_head FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_scope ON platform_audit_head
    USING (current_setting('karen.scope', true) = 'platform')
    WITH CHECK (current_setting('karen.scope', true) = 'platform');
ALTER TABLE platform_audit_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE platform_audit_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_scope ON platform_audit_checkpoints
    USING (current_setting('karen.scope', true) = 'platform')
    WITH CHECK (current_setting('karen.scope', true) = 'platform');
