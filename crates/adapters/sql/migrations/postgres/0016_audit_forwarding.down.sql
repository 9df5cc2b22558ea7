DROP TABLE audit_forwarded;
