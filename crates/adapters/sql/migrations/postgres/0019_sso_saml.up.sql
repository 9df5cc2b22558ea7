-- SAML 2.0 single sign-on. The connection itself is an sso_connections row of
-- kind 'saml' (its config holds the IdP's entity ID, SSO URLs and public
-- signing certificates; there is no secret), and pending logins reuse
-- sso_login_states (the RelayState digest; the AuthnRequest ID is derived
-- from the login id). What SAML adds is the replay cache: every accepted
-- assertion ID until it expires. The primary key refuses a second use
-- atomically, whichever replica sees it.
CREATE TABLE sso_consumed_assertions (
    tenant_id UUID NOT NULL,
    assertion_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, assertion_id),
    FOREIGN KEY (tenant_id) REFERENCES tenants (id)
);
CREATE INDEX sso_consumed_assertions_by_expiry ON sso_consumed_assertions (tenant_id, expires_at);

ALTER TABLE sso_consumed_assertions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sso_consumed_assertions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sso_consumed_assertions
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
