-- dramatiq-bbo 0011: one clock for every time decision (dramatiq_bbo.clock).
--
-- Idempotent, like every file here.
--
-- bbo.now() is the server's now() plus the offset of the library's clock, which a lent
-- connection carries in the session setting bbo.clock_offset (seconds) only when a test
-- installed a simulated clock. Without the setting it is exactly now(): in production every
-- statement below sees the same transaction timestamp as before. It is a one-line SQL
-- function, STABLE like now(), so the planner inlines it.
--
-- Every hold, interval, lease, expiry and row timestamp the library writes or compares goes
-- through it; the health indicators' transaction ages stay on the server's own clock.

CREATE OR REPLACE FUNCTION bbo.now() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT now() + coalesce(nullif(current_setting('bbo.clock_offset', true), ''), '0')::float8
                   * interval '1 second'
$$;

CREATE OR REPLACE FUNCTION bbo.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := bbo.now();
    RETURN NEW;
END
$$;

-- Column defaults (ALTER on a partitioned table reaches every partition).
ALTER TABLE bbo.background_operation_workers_cell_local
    ALTER COLUMN created_at SET DEFAULT bbo.now(),
    ALTER COLUMN updated_at SET DEFAULT bbo.now();
ALTER TABLE bbo.background_operation_workers
    ALTER COLUMN created_at SET DEFAULT bbo.now(),
    ALTER COLUMN updated_at SET DEFAULT bbo.now();
ALTER TABLE bbo.background_operation_jobs_cell_local
    ALTER COLUMN created_at SET DEFAULT bbo.now(),
    ALTER COLUMN updated_at SET DEFAULT bbo.now();
ALTER TABLE bbo.background_operation_jobs
    ALTER COLUMN created_at SET DEFAULT bbo.now(),
    ALTER COLUMN updated_at SET DEFAULT bbo.now();
ALTER TABLE bbo.disabled_classes ALTER COLUMN disabled_at SET DEFAULT bbo.now();
ALTER TABLE bbo.learned_batch_sizes ALTER COLUMN learned_at SET DEFAULT bbo.now();
ALTER TABLE bbo.tracked_operations ALTER COLUMN created_at SET DEFAULT bbo.now();
ALTER TABLE bbo.tracked_failed_items ALTER COLUMN created_at SET DEFAULT bbo.now();
ALTER TABLE bbo.tracking_flags ALTER COLUMN changed_at SET DEFAULT bbo.now();

-- The views' holds and running durations: each view is redefined from its own stored
-- definition with now() read as bbo.now() (a second run finds nothing left to replace).
DO $$
DECLARE
    view_name text;
    definition text;
BEGIN
    FOREACH view_name IN ARRAY ARRAY['bbo.operations', 'bbo.jobs', 'bbo.failed_jobs'] LOOP
        definition := pg_get_viewdef(view_name::regclass);
        IF definition ~ '(^|[^.a-z_])now\(\)' THEN
            EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', view_name,
                           regexp_replace(definition, '(^|[^.a-z_])now\(\)', '\1bbo.now()', 'g'));
        END IF;
    END LOOP;
END
$$;

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0011', 'clock')
ON CONFLICT (version) DO NOTHING;
