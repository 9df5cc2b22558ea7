-- Daily sums of usage per tenant, per user and per API key, kept in step with
-- usage_records (same transaction), so that budget checks read at most a
-- month of rows instead of every usage record of the period.

CREATE TABLE usage_aggregates (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    scope TEXT NOT NULL CHECK (scope IN ('tenant', 'user', 'api_key')),
    subject_id BLOB NOT NULL,
    day INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, scope, subject_id, day)
);
