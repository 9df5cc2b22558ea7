DROP INDEX sso_identities_by_user;
DROP TABLE sso_identities;
DROP INDEX sso_login_states_by_expiry;
DROP TABLE sso_login_states;
DROP TABLE sso_connections;
