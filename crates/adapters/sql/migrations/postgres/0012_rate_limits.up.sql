-- Per-tenant rate-limit overrides set by the platform operator (JSON: any of
-- tenant, user, api_key, each {requests, window_secs}); NULL: the plan's limits.
-- A column of the registry row, not a tenant table: only the operator writes it
-- (the row's platform_scope policy), and it goes with the row when the tenant
-- is deleted.
ALTER TABLE tenants ADD COLUMN rate_limits JSONB;
