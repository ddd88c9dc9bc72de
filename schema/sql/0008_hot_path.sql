-- dramatiq-bbo 0008: the sub-batch hot path writes one row.
--
-- A sub-batch commits its checkpoint on its job row only; the job's counters reach its
-- operation's row at most once a second and at the end of the walk (unrolled_processed and
-- unrolled_affected on the job hold what the operation does not have yet; 0 for every job
-- written before this file, whose counts were all on the operation already). A
-- runner killed between two roll-ups leaves a little of its job's count on the job row alone,
-- until that job runs again: bbo.operation_rows (and so bbo.operations) adds those counts, so
-- what an operator reads is always what the jobs committed.
--
-- The touch_updated_at triggers now fire only when a writer left updated_at unchanged: the
-- library's own statements set it themselves, so the rows written every sub-batch cost no
-- trigger call, while a hand-written UPDATE in psql still gets its updated_at.
--
-- Idempotent, like every file here.

ALTER TABLE bbo.background_operation_jobs_cell_local
    ADD COLUMN IF NOT EXISTS unrolled_processed bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unrolled_affected bigint NOT NULL DEFAULT 0;
ALTER TABLE bbo.background_operation_jobs
    ADD COLUMN IF NOT EXISTS unrolled_processed bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unrolled_affected bigint NOT NULL DEFAULT 0;

DROP TRIGGER IF EXISTS bowcl_touch_updated_at ON bbo.background_operation_workers_cell_local;
CREATE TRIGGER bowcl_touch_updated_at BEFORE UPDATE
    ON bbo.background_operation_workers_cell_local
    FOR EACH ROW WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION bbo.touch_updated_at();
DROP TRIGGER IF EXISTS bow_touch_updated_at ON bbo.background_operation_workers;
CREATE TRIGGER bow_touch_updated_at BEFORE UPDATE
    ON bbo.background_operation_workers
    FOR EACH ROW WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION bbo.touch_updated_at();
DROP TRIGGER IF EXISTS bojcl_touch_updated_at ON bbo.background_operation_jobs_cell_local;
CREATE TRIGGER bojcl_touch_updated_at BEFORE UPDATE
    ON bbo.background_operation_jobs_cell_local
    FOR EACH ROW WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION bbo.touch_updated_at();
DROP TRIGGER IF EXISTS boj_touch_updated_at ON bbo.background_operation_jobs;
CREATE TRIGGER boj_touch_updated_at BEFORE UPDATE
    ON bbo.background_operation_jobs
    FOR EACH ROW WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION bbo.touch_updated_at();

-- Room on each page for the job row's next version: a checkpoint that changes no indexed column
-- is then a HOT update (no new index entry per sub-batch).
ALTER TABLE bbo.background_operation_jobs_cell_local_1 SET (fillfactor = 80);
ALTER TABLE bbo.background_operation_jobs_1 SET (fillfactor = 80);

-- The operation's counters as its jobs committed them (same columns as in 0006).
CREATE OR REPLACE VIEW bbo.operation_rows AS
SELECT 'cell_local'::text AS scope,
       w.id::text AS id,
       w.partition,
       w.database_name,
       NULL::bigint AS organization_id,
       NULL::bigint AS user_id,
       w.job_class_name,
       w.table_schema,
       w.table_name,
       w.column_name,
       w.status,
       w.priority,
       w.batch_size,
       w.sub_batch_size,
       w.pause_ms,
       w.interval_seconds,
       w.total_tuple_count,
       w.processed_tuple_count + unrolled.processed AS processed_tuple_count,
       w.affected_tuple_count + unrolled.affected AS affected_tuple_count,
       w.on_hold_until,
       w.hold_reason,
       w.last_error_class,
       w.last_error_message,
       w.last_error_at,
       w.created_at,
       w.started_at,
       w.finished_at,
       w.updated_at,
       w.id AS local_id,
       NULL::uuid AS org_id
FROM bbo.background_operation_workers_cell_local AS w
CROSS JOIN LATERAL (
    SELECT coalesce(sum(j.unrolled_processed), 0)::bigint AS processed,
           coalesce(sum(j.unrolled_affected), 0)::bigint AS affected
    FROM bbo.background_operation_jobs_cell_local AS j
    WHERE j.worker_id = w.id AND j.status IN (0, 1, 2)
      AND (j.unrolled_processed <> 0 OR j.unrolled_affected <> 0)
) AS unrolled
UNION ALL
SELECT 'organization'::text,
       w.id::text,
       w.partition,
       w.database_name,
       w.organization_id,
       w.user_id,
       w.job_class_name,
       w.table_schema,
       w.table_name,
       w.column_name,
       w.status,
       w.priority,
       w.batch_size,
       w.sub_batch_size,
       w.pause_ms,
       w.interval_seconds,
       w.total_tuple_count,
       w.processed_tuple_count + unrolled.processed AS processed_tuple_count,
       w.affected_tuple_count + unrolled.affected AS affected_tuple_count,
       w.on_hold_until,
       w.hold_reason,
       w.last_error_class,
       w.last_error_message,
       w.last_error_at,
       w.created_at,
       w.started_at,
       w.finished_at,
       w.updated_at,
       NULL::bigint,
       w.id
FROM bbo.background_operation_workers AS w
CROSS JOIN LATERAL (
    SELECT coalesce(sum(j.unrolled_processed), 0)::bigint AS processed,
           coalesce(sum(j.unrolled_affected), 0)::bigint AS affected
    FROM bbo.background_operation_jobs AS j
    WHERE j.worker_id = w.id AND j.status IN (0, 1, 2)
      AND (j.unrolled_processed <> 0 OR j.unrolled_affected <> 0)
) AS unrolled;

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0008', 'hot_path')
ON CONFLICT (version) DO NOTHING;
