-- The tamper-evident audit trail. Each tenant has one hash chain: event `seq`
-- (1, 2, 3… without gaps) stores the hash of event `seq - 1` and its own hash
-- over the canonical encoding (karen_domain::audit). `audit_heads` holds the
-- newest (seq, hash) of each chain; appenders update it first, so its row lock
-- serialises a tenant's appends until their transactions end (other tenants
-- are not held up). Checkpoints are Ed25519 signatures over (tenant, seq, hash).
--
-- Append-only: the application role is granted INSERT and SELECT only (see
-- grant_app_role), and a trigger refuses UPDATE, DELETE and TRUNCATE for
-- everyone. The two controlled ways to remove rows are the SECURITY DEFINER
-- functions below: a whole tenant's trail while the tenant is being deleted,
-- and (for retention) a prefix ending at a signed checkpoint.

CREATE TABLE audit_events (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    seq BIGINT NOT NULL CHECK (seq > 0),
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
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_by_time ON audit_events (tenant_id, at);
CREATE INDEX audit_events_by_action ON audit_events (tenant_id, action, seq);

CREATE TABLE audit_heads (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (tenant_id)
);

CREATE TABLE audit_checkpoints (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    signed_at BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    signature BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
ALTER TABLE audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_heads
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
ALTER TABLE audit_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_checkpoints
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

-- Refuses every change but a delete inside one of the functions below (which
-- set karen.audit_delete for the rest of their statement only).
CREATE FUNCTION karen_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('karen.audit_delete', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = '42501';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION karen_audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION karen_audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION karen_audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION karen_audit_append_only();

-- Removes a tenant's audit trail, only while that tenant is being deleted
-- (tenancy rule 6). Runs as the migration owner; row-level security still
-- binds it to the tenant set for the transaction. `what` is 'events' or
-- 'checkpoints'; returns the number of rows removed.
CREATE FUNCTION karen_audit_purge_tenant(target UUID, what TEXT) RETURNS BIGINT
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    removed BIGINT;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tenants WHERE id = target AND status = 'deleting') THEN
        RAISE EXCEPTION 'an audit trail is removed only while its tenant is being deleted'
            USING ERRCODE = '42501';
    END IF;
    PERFORM set_config('karen.audit_delete', 'on', true);
    IF what = 'checkpoints' THEN
        DELETE FROM audit_checkpoints WHERE tenant_id = target;
    ELSE
        DELETE FROM audit_events WHERE tenant_id = target;
    END IF;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('karen.audit_delete', 'off', true);
    RETURN removed;
END
$$;

-- Retention: removes the tenant's events up to and including `through_seq`,
-- which must be the sequence number of a checkpoint (written and signed
-- first), so verification starts from that checkpoint afterwards. Only for
-- the tenant set for the transaction. Policy (minimum ages, legal hold) is the
-- caller's business.
CREATE FUNCTION karen_audit_drop_prefix(target UUID, through_seq BIGINT) RETURNS BIGINT
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    removed BIGINT;
BEGIN
    IF target IS DISTINCT FROM NULLIF(current_setting('karen.tenant_id', true), '')::uuid THEN
        RAISE EXCEPTION 'only the tenant of the transaction' USING ERRCODE = '42501';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_checkpoints WHERE tenant_id = target AND seq = through_seq) THEN
        RAISE EXCEPTION 'a prefix of the audit trail is removed only up to a signed checkpoint'
            USING ERRCODE = '42501';
    END IF;
    PERFORM set_config('karen.audit_delete', 'on', true);
    DELETE FROM audit_events WHERE tenant_id = target AND seq <= through_seq;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('karen.audit_delete', 'off', true);
    RETURN removed;
END
$$;
