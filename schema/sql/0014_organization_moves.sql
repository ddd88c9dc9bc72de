-- dramatiq-bbo 0014: the record of an organization's move between two cells' databases.
--
-- Idempotent, like every file here. A move (dramatiq_bbo.cells) writes one row in the source
-- database and one in the target, both under the same move_id, each advanced in the same
-- transaction as the step it records: a re-run reads them to finish a half-done move at
-- the step where it stopped. A finished row stays behind as the organization's forwarding
-- note ("moved to cell_b at ..."); one unfinished move per organization and database.
--
--   role        'source' or 'target': which side of the move this database is
--   step        the last step committed here (see dramatiq_bbo.cells.record.Step)
--   operations  per moved operation: its status before the move paused it (source), and
--               on the target also the hold it had, both restored when it resumes there
--   fingerprints  per operation: its updated_at when copied, compared before the source
--               copy is deleted (a source row changed since then means the copy is stale)

CREATE TABLE IF NOT EXISTS bbo.organization_moves (
    move_id          uuid NOT NULL,
    role             text NOT NULL,
    organization_id  bigint NOT NULL,
    source_name      text NOT NULL,
    target_name      text NOT NULL,
    step             text NOT NULL,
    operations       jsonb NOT NULL DEFAULT '{}'::jsonb,
    fingerprints     jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at       timestamptz NOT NULL DEFAULT bbo.now(),
    updated_at       timestamptz NOT NULL DEFAULT bbo.now(),
    finished_at      timestamptz,
    PRIMARY KEY (move_id, role),
    CONSTRAINT om_role CHECK (role IN ('source', 'target')),
    CONSTRAINT om_step CHECK (step IN ('paused', 'drained', 'copied', 'deleted', 'resumed',
                                       'finished')),
    CONSTRAINT om_operations_object CHECK (jsonb_typeof(operations) = 'object'),
    CONSTRAINT om_fingerprints_object CHECK (jsonb_typeof(fingerprints) = 'object'),
    CONSTRAINT om_names CHECK (char_length(source_name) BETWEEN 1 AND 63
                               AND char_length(target_name) BETWEEN 1 AND 63)
);

CREATE UNIQUE INDEX IF NOT EXISTS om_one_unfinished_per_organization
    ON bbo.organization_moves (organization_id)
    WHERE finished_at IS NULL;

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0014', 'organization_moves')
ON CONFLICT (version) DO NOTHING;
