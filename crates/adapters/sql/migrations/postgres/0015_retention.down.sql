GRANT EXECUTE ON FUNCTION karen_audit_purge_tenant(UUID, TEXT) TO PUBLIC;
GRANT EXECUTE ON FUNCTION karen_audit_drop_prefix(UUID, BIGINT) TO PUBLIC;
DROP TABLE legal_holds;
DROP TABLE retention_runs;
DROP TABLE retention_policies;
