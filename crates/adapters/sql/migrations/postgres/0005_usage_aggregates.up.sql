-- Daily sums of usage per tenant, per user and per API key, kept in step with
-- usage_records (same transaction), so that budget checks read at most a
-- month of rows instead of every usage record of the period.

CREATE TABLE usage_aggregates (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    scope TEXT NOT NULL CHECK (scope IN ('tenant', 'user', 'api_key')),
    subject_id UUID NOT NULL,
    day BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, scope, subject_id, day)
);

ALTER TABLE usage_aggregates ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_aggregates FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_aggregates
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
