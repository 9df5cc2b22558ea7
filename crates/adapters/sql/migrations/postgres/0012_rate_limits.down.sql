ALTER TABLE tenants DROP COLUMN rate_limits;
