-- Conversations, messages, personas and usage records. Message content is a
-- byte string written by one function (karen-sql `content.rs`), so encryption at rest
-- can be added in one place.

CREATE TABLE personas (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    id UUID NOT NULL,
    owner_user_id UUID,
    name TEXT NOT NULL,
    system_prompt TEXT NOT NULL,
    model TEXT,
    temperature DOUBLE PRECISION,
    max_tokens INTEGER,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, owner_user_id) REFERENCES users (tenant_id, id)
);

CREATE TABLE conversations (
    tenant_id UUID NOT NULL,
    id UUID NOT NULL,
    user_id UUID NOT NULL,
    title TEXT,
    persona_id UUID,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX conversations_by_activity ON conversations (tenant_id, user_id, last_activity_at, id);

CREATE TABLE messages (
    tenant_id UUID NOT NULL,
    id UUID NOT NULL,
    conversation_id UUID NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content BYTEA NOT NULL,
    tool_calls JSONB,
    status TEXT NOT NULL CHECK (status IN ('complete', 'interrupted', 'failed')),
    model TEXT,
    provider TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX messages_by_conversation ON messages (tenant_id, conversation_id, id);

CREATE TABLE usage_records (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    id UUID NOT NULL,
    user_id UUID,
    api_key_id UUID,
    conversation_id UUID,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    counted_locally BOOLEAN NOT NULL,
    latency_ms INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'interrupted', 'budget_cut')),
    cost_micros BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX usage_by_time ON usage_records (tenant_id, created_at);

-- Row-level security, as for every tenant table.
ALTER TABLE personas ENABLE ROW LEVEL SECURITY;
ALTER TABLE personas FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON personas
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversations
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON messages
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

ALTER TABLE usage_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_records
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
