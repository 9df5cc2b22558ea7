-- Single-use password tokens: the first password of an account created
-- without one (`setup`) and an administrator's reset of a forgotten one
-- (`reset`). Only the SHA-256 digest of a token is stored; issuing a new
-- token for a user deletes their earlier ones.
CREATE TABLE password_tokens (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    purpose TEXT NOT NULL CHECK (purpose IN ('setup', 'reset')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    created_by TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX password_tokens_by_user ON password_tokens (tenant_id, user_id);
