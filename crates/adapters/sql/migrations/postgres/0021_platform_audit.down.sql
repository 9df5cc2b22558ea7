DROP TABLE platform_audit_checkpoints;
DROP TABLE platform_audit_head;
DROP TABLE platform_audit_events;
