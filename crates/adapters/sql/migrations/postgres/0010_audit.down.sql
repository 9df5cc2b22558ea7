DROP FUNCTION karen_audit_drop_prefix(UUID, BIGINT);
DROP FUNCTION karen_audit_purge_tenant(UUID, TEXT);
DROP TABLE audit_checkpoints;
DROP TABLE audit_heads;
DROP TABLE audit_events;
DROP FUNCTION karen_audit_append_only();
