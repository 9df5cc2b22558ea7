-- Conversations, messages, personas and usage records. Message content is a
-- byte string written by one function (karen-sql `content.rs`), so encryption at rest
-- can be added in one place.

CREATE TABLE personas (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    id BLOB NOT NULL,
    owner_user_id BLOB,
    name TEXT NOT NULL,
    system_prompt TEXT NOT NULL,
    model TEXT,
    temperature REAL,
    max_tokens INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, owner_user_id) REFERENCES users (tenant_id, id)
);

CREATE TABLE conversations (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    title TEXT,
    persona_id BLOB,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX conversations_by_activity ON conversations (tenant_id, user_id, last_activity_at, id);

CREATE TABLE messages (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    conversation_id BLOB NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content BLOB NOT NULL,
    tool_calls TEXT,
    status TEXT NOT NULL CHECK (status IN ('complete', 'interrupted', 'failed')),
    model TEXT,
    provider TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX messages_by_conversation ON messages (tenant_id, conversation_id, id);

CREATE TABLE usage_records (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    id BLOB NOT NULL,
    user_id BLOB,
    api_key_id BLOB,
    conversation_id BLOB,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    counted_locally INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'interrupted', 'budget_cut')),
    cost_micros INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX usage_by_time ON usage_records (tenant_id, created_at);
