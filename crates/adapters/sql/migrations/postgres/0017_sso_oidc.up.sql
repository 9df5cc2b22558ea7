-- Single sign-on: a tenant's identity-provider connections (one per kind:
-- 'oidc' now, 'saml' later; the client secret sealed like message content),
-- the pending logins (state, nonce digest, sealed PKCE verifier; single use)
-- and the external identities linked to users (matched by the provider's
-- subject, never by email).
CREATE TABLE sso_connections (
    tenant_id UUID NOT NULL,
    id UUID NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('oidc', 'saml')),
    config JSONB NOT NULL,
    client_secret BYTEA,
    role_mapping JSONB NOT NULL,
    enabled BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind),
    FOREIGN KEY (tenant_id) REFERENCES tenants (id)
);

CREATE TABLE sso_login_states (
    tenant_id UUID NOT NULL,
    id UUID NOT NULL,
    connection_id UUID NOT NULL,
    state_hash BYTEA NOT NULL,
    nonce_hash BYTEA NOT NULL,
    pkce_verifier BYTEA NOT NULL,
    redirect_uri TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, connection_id) REFERENCES sso_connections (tenant_id, id)
);
CREATE INDEX sso_login_states_by_expiry ON sso_login_states (tenant_id, expires_at);

CREATE TABLE sso_identities (
    tenant_id UUID NOT NULL,
    connection_id UUID NOT NULL,
    subject TEXT NOT NULL,
    user_id UUID NOT NULL,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, connection_id, subject),
    FOREIGN KEY (tenant_id, connection_id) REFERENCES sso_connections (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX sso_identities_by_user ON sso_identities (tenant_id, user_id);

ALTER TABLE sso_connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE sso_connections FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sso_connections
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

ALTER TABLE sso_login_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE sso_login_states FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sso_login_states
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);

ALTER TABLE sso_identities ENABLE ROW LEVEL SECURITY;
ALTER TABLE sso_identities FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sso_identities
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
