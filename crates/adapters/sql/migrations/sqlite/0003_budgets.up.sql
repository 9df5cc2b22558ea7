-- Budgets (limits per tenant, user or API key) and reservations (budget set
-- aside for calls in flight; each becomes a usage record when the call ends).

CREATE TABLE budgets (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    id BLOB NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('tenant', 'user', 'api_key')),
    subject_id BLOB,
    metric TEXT NOT NULL CHECK (metric IN ('tokens', 'cost_micros')),
    period TEXT NOT NULL CHECK (period IN ('day', 'month')),
    limit_value INTEGER NOT NULL,
    enforcement TEXT NOT NULL CHECK (enforcement IN ('hard', 'soft')),
    locked_at INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE usage_reservations (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    id BLOB NOT NULL,
    user_id BLOB,
    api_key_id BLOB,
    conversation_id BLOB,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_allowance INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX usage_reservations_by_expiry ON usage_reservations (tenant_id, expires_at);
