-- How far each external audit collector (`sink`: webhook, syslog) has
-- accepted a tenant's audit trail. The forwarder sends the events after
-- `seq` and moves it forward only once the collector accepted them, so a
-- restart or an unreachable collector loses nothing.

CREATE TABLE audit_forwarded (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL CHECK (seq >= 0),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, sink)
);
