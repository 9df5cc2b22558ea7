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

-- Backfill from the usage recorded before this migration. Row-level security is
-- forced on both tables, also for their owner: lift it for the backfill only.
ALTER TABLE usage_records NO FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_aggregates NO FORCE ROW LEVEL SECURITY;
INSERT INTO usage_aggregates (tenant_id, scope, subject_id, day, tokens, cost_micros)
SELECT tenant_id, 'tenant', '00000000-0000-0000-0000-000000000000'::uuid, (created_at / 86400000) * 86400000,
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
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_aggregates FORCE ROW LEVEL SECURITY;
