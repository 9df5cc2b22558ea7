-- The scale-out full-text index (karen-text's PostgresTextIndex): one row per
-- indexed memory or document chunk, derived from the tables above and
-- rebuildable from them. Only the analysed words (tsvector) are kept, not the
-- text. Access columns hold typed values the searcher is matched against:
-- owner (a private memory), roles (a restricted document's chunk).

CREATE TABLE text_entries (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    kind TEXT NOT NULL CHECK (kind IN ('memory', 'chunk')),
    id UUID NOT NULL,
    owner UUID,
    roles TEXT[] NOT NULL DEFAULT '{}',
    document UUID,
    tsv TSVECTOR NOT NULL,
    PRIMARY KEY (tenant_id, kind, id)
);

CREATE INDEX text_entries_tsv ON text_entries USING GIN (tsv);

ALTER TABLE text_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE text_entries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON text_entries
    USING (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('karen.tenant_id', true), '')::uuid);
