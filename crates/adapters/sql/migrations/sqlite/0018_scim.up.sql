-- SCIM 2.0 provisioning: what an identity provider set on a user beyond the
-- account (a row marks the user as managed by SCIM; deleted_at hides it from
-- SCIM after a DELETE, the account itself stays disabled), its groups and their
-- members, and the roles a group granted a member (a role the user held
-- before is not recorded, so removing the group never takes it away).
CREATE TABLE scim_users (
    tenant_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    external_id TEXT,
    given_name TEXT,
    family_name TEXT,
    emails TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX scim_users_by_external_id ON scim_users (tenant_id, external_id);

CREATE TABLE scim_groups (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    id BLOB NOT NULL,
    display_name TEXT NOT NULL,
    -- display_name in lower case: names are unique ignoring case.
    display_name_key TEXT NOT NULL,
    external_id TEXT,
    version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, display_name_key)
);
CREATE INDEX scim_groups_by_external_id ON scim_groups (tenant_id, external_id);

CREATE TABLE scim_group_members (
    tenant_id BLOB NOT NULL,
    group_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, group_id, user_id),
    FOREIGN KEY (tenant_id, group_id) REFERENCES scim_groups (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX scim_group_members_by_user ON scim_group_members (tenant_id, user_id);

CREATE TABLE scim_role_grants (
    tenant_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    role TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id, role),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
