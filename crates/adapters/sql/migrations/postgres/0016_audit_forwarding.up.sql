-- How far each external audit collector (`sink`: webhook, syslog) has
-- accepted a tenant's audit trail. The forwarder sends the events after
-- `seq` and moves it forward only once the collector accepted them, so a
-- restart or an unreachable collector loses nothing.

CREATE TABLE audit_forwarded (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    sink TEXT NOT NULL,
    seq BIGINT NOT NULL CHECK (seq >= 0),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sink)
);

ALTER TABLE audit_forwarded ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_forwarded FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_forwarded
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
