DROP INDEX password_tokens_by_user;
DROP TABLE password_tokens;
