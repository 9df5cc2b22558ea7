DROP TABLE model_aliases;
DROP TABLE tenant_providers;
