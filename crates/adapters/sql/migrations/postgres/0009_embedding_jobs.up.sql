-- Re-embedding jobs: a tenant that changes `settings.embedding_model` gets a
-- job that re-embeds its memories and document chunks with the new model into
-- a new vector space, then switches its searches over. The newest `done` job
-- names the model the tenant's searches use (none: the platform default).
-- Progress (`cursor`, the last entry key handled) is saved after each batch,
-- so a job interrupted by a restart resumes where it stopped; a lease lets
-- one replica at a time work on it.

CREATE TABLE embedding_jobs (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    id UUID NOT NULL,
    from_model TEXT NOT NULL,
    to_model TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    total BIGINT NOT NULL,
    done BIGINT NOT NULL,
    -- The last entry key handled ("memory:<uuid>" or "chunk:<uuid>"), in key order.
    cursor TEXT,
    -- The new model's vector length, once known.
    dims INTEGER,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX embedding_jobs_by_state ON embedding_jobs (tenant_id, state, id);

ALTER TABLE embedding_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE embedding_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON embedding_jobs
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
