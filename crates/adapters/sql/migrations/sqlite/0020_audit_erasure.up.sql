-- Erasure of personal data from the audit trail without breaking the chain
-- (chain version 2, karen_domain::audit::personal): each new event stores a
-- random salt from which the commitments to its personal fields derive; an
-- erased event has no salt but a JSON record of each field's salt or, for
-- erased fields, the commitment and the erasure's pseudonym.
ALTER TABLE audit_events ADD COLUMN pii_salt BLOB;
ALTER TABLE audit_events ADD COLUMN redactions TEXT;

-- The only update the trail allows: an erasure, which changes nothing but
-- the personal fields of a version-2 event and replaces its salt with its
-- redactions (the hash, sequence and every other field stay as they were).
DROP TRIGGER audit_events_no_update;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    WHEN NOT (
        OLD.tenant_id IS NEW.tenant_id AND OLD.seq IS NEW.seq AND OLD.at IS NEW.at
        AND OLD.actor_kind IS NEW.actor_kind AND OLD.action IS NEW.action
        AND OLD.target_type IS NEW.target_type AND OLD.outcome IS NEW.outcome
        AND OLD.request_id IS NEW.request_id AND OLD.prev_hash IS NEW.prev_hash
        AND OLD.hash IS NEW.hash
        AND (OLD.pii_salt IS NOT NULL OR OLD.redactions IS NOT NULL)
        AND NEW.pii_salt IS NULL AND NEW.redactions IS NOT NULL
    )
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
