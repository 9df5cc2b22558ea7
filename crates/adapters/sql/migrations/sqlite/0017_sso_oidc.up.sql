-- Single sign-on: a tenant's identity-provider connections (one per kind:
-- 'oidc' now, 'saml' later; the client secret sealed like message content),
-- the pending logins (state, nonce digest, sealed PKCE verifier; single use)
-- and the external identities linked to users (matched by the provider's
-- subject, never by email).
CREATE TABLE sso_connections (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('oidc', 'saml')),
    config TEXT NOT NULL,
    client_secret BLOB,
    role_mapping TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind),
    FOREIGN KEY (tenant_id) REFERENCES tenants (id)
);

CREATE TABLE sso_login_states (
    tenant_id BLOB NOT NULL,
    id BLOB NOT NULL,
    connection_id BLOB NOT NULL,
    state_hash BLOB NOT NULL,
    nonce_hash BLOB NOT NULL,
    pkce_verifier BLOB NOT NULL,
    redirect_uri TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, connection_id) REFERENCES sso_connections (tenant_id, id)
);
CREATE INDEX sso_login_states_by_expiry ON sso_login_states (tenant_id, expires_at);

CREATE TABLE sso_identities (
    tenant_id BLOB NOT NULL,
    connection_id BLOB NOT NULL,
    subject TEXT NOT NULL,
    user_id BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    last_login_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, connection_id, subject),
    FOREIGN KEY (tenant_id, connection_id) REFERENCES sso_connections (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX sso_identities_by_user ON sso_identities (tenant_id, user_id);

