-- SAML 2.0 single sign-on. The connection itself is an sso_connections row of
-- kind 'saml' (its config holds the IdP's entity ID, SSO URLs and public
-- signing certificates; there is no secret), and pending logins reuse
-- sso_login_states (the RelayState digest; the AuthnRequest ID is derived
-- from the login id). What SAML adds is the replay cache: every accepted
-- assertion ID until it expires. The primary key refuses a second use
-- atomically, whichever replica sees it.
CREATE TABLE sso_consumed_assertions (
    tenant_id BLOB NOT NULL,
    assertion_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, assertion_id),
    FOREIGN KEY (tenant_id) REFERENCES tenants (id)
);
CREATE INDEX sso_consumed_assertions_by_expiry ON sso_consumed_assertions (tenant_id, expires_at);
