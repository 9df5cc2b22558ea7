-- Erasure of personal data from the audit trail without breaking the chain
-- (chain version 2, karen_domain::audit::personal): each new event stores a
-- random salt from which the commitments to its personal fields derive; an
-- erased event has no salt but a JSON record of each field's salt or, for
-- erased fields, the commitment and the erasure's pseudonym.
ALTER TABLE audit_events ADD COLUMN pii_salt BYTEA;
ALTER TABLE audit_events ADD COLUMN redactions TEXT;

-- The append-only trigger now also lets through, inside karen_audit_redact
-- only, an update that changes nothing but the personal fields of a
-- version-2 event and replaces its salt with its redactions.
CREATE OR REPLACE FUNCTION karen_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('karen.audit_delete', true) = 'on' THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'audit_events'
        AND current_setting('karen.audit_redact', true) = 'on'
        AND OLD.tenant_id = NEW.tenant_id AND OLD.seq = NEW.seq AND OLD.at = NEW.at
        AND OLD.actor_kind = NEW.actor_kind AND OLD.action = NEW.action
        AND OLD.target_type IS NOT DISTINCT FROM NEW.target_type AND OLD.outcome = NEW.outcome
        AND OLD.request_id IS NOT DISTINCT FROM NEW.request_id
        AND OLD.prev_hash = NEW.prev_hash AND OLD.hash = NEW.hash
        AND (OLD.pii_salt IS NOT NULL OR OLD.redactions IS NOT NULL)
        AND NEW.pii_salt IS NULL AND NEW.redactions IS NOT NULL THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = '42501';
END
$$;

-- An erasure: replaces event `at_seq`'s personal fields and its salt, for the
-- tenant of the transaction only. Returns 1, or no row when there is no such
-- event.
CREATE FUNCTION karen_audit_redact(
    target UUID, at_seq BIGINT, new_actor_id TEXT, new_actor_user_id TEXT, new_target_id TEXT,
    new_ip TEXT, new_user_agent TEXT, new_diff TEXT, new_redactions TEXT
) RETURNS SETOF INTEGER
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF target IS DISTINCT FROM NULLIF(current_setting('karen.tenant_id', true), '')::uuid THEN
        RAISE EXCEPTION 'only the tenant of the transaction' USING ERRCODE = '42501';
    END IF;
    PERFORM set_config('karen.audit_redact', 'on', true);
    RETURN QUERY
        UPDATE audit_events SET actor_id = new_actor_id, actor_user_id = new_actor_user_id,
            target_id = new_target_id, ip = new_ip, user_agent = new_user_agent, diff = new_diff,
            redactions = new_redactions, pii_salt = NULL
        WHERE tenant_id = target AND seq = at_seq
        RETURNING 1;
    PERFORM set_config('karen.audit_redact', 'off', true);
END
$$;
REVOKE EXECUTE ON FUNCTION karen_audit_redact(UUID, BIGINT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT) FROM PUBLIC;
