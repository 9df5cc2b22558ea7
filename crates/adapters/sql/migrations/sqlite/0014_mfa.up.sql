-- Multi-factor authentication: one TOTP authenticator per user (its secret
-- sealed like message content), single-use recovery codes (SHA-256 digests of
-- high-entropy codes) and the pending second steps of logins.
CREATE TABLE mfa_totp (
    tenant_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    secret BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'active')),
    last_used_step INTEGER,
    created_at INTEGER NOT NULL,
    activated_at INTEGER,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

CREATE TABLE mfa_recovery_codes (
    tenant_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    code_hash BLOB NOT NULL,
    used_at INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

CREATE TABLE mfa_challenges (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    secret_hash BLOB NOT NULL,
    purpose TEXT NOT NULL CHECK (purpose IN ('verify', 'enroll')),
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX mfa_challenges_by_user ON mfa_challenges (tenant_id, user_id);
