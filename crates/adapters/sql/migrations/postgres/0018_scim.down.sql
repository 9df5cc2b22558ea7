DROP TABLE scim_role_grants;
DROP INDEX scim_group_members_by_user;
DROP TABLE scim_group_members;
DROP INDEX scim_groups_by_external_id;
DROP TABLE scim_groups;
DROP INDEX scim_users_by_external_id;
DROP TABLE scim_users;
