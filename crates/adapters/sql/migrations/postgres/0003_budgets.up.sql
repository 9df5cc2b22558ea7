-- Budgets (limits per tenant, user or API key) and reservations (budget set
-- aside for calls in flight; each becomes a usage record when the call ends).

CREATE TABLE budgets (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    id UUID NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('tenant', 'user', 'api_key')),
    subject_id UUID,
    metric TEXT NOT NULL CHECK (metric IN ('tokens', 'cost_micros')),
    period TEXT NOT NULL CHECK (period IN ('day', 'month')),
    limit_value BIGINT NOT NULL,
    enforcement TEXT NOT NULL CHECK (enforcement IN ('hard', 'soft')),
    locked_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE usage_reservations (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    id UUID NOT NULL,
    user_id UUID,
    api_key_id UUID,
    conversation_id UUID,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_allowance INTEGER NOT NULL,
    cost_micros BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX usage_reservations_by_expiry ON usage_reservations (tenant_id, expires_at);

ALTER TABLE budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE budgets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budgets
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

ALTER TABLE usage_reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_reservations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_reservations
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
