DROP TRIGGER audit_events_no_delete;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    WHEN NOT EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id AND status = 'deleting')
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
DROP INDEX legal_holds_active;
DROP TABLE legal_holds;
DROP TABLE retention_runs;
DROP TABLE retention_policies;
