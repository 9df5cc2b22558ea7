DROP TRIGGER audit_events_no_update;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
ALTER TABLE audit_events DROP COLUMN redactions;
ALTER TABLE audit_events DROP COLUMN pii_salt;
