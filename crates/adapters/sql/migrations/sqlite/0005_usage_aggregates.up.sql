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

-- Backfill from the usage recorded before this migration.
INSERT INTO usage_aggregates (tenant_id, scope, subject_id, day, tokens, cost_micros)
SELECT tenant_id, 'tenant', X'00000000000000000000000000000000', (created_at / 86400000) * 86400000,
       SUM(prompt_tokens + completion_tokens), SUM(cost_micros)
  FROM usage_records GROUP BY tenant_id, created_at / 86400000;
INSERT INTO usage_aggregates (tenant_id, scope, subject_id, day, tokens, cost_micros)
SELECT tenant_id, 'user', user_id, (created_at / 86400000) * 86400000,
       SUM(prompt_tokens + completion_tokens), SUM(cost_micros)
  FROM usage_records WHERE user_id IS NOT NULL GROUP BY tenant_id, user_id, created_at / 86400000;
INSERT INTO usage_aggregates (tenant_id, scope, subject_id, day, tokens, cost_micros)
SELECT tenant_id, 'api_key', api_key_id, (created_at / 86400000) * 86400000,
       SUM(prompt_tokens + completion_tokens), SUM(cost_micros)
  FROM usage_records WHERE api_key_id IS NOT NULL GROUP BY tenant_id, api_key_id, created_at / 86400000;
