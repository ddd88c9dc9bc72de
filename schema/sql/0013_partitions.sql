-- dramatiq-bbo 0013: sliding partitions (dramatiq_bbo.partitions).
--
-- Idempotent, like every file here.
--
-- The four state tables are LIST-partitioned on "partition" (0001). bbo.partitions is the
-- register of those partition numbers: the newest one not dropped is the current partition
-- (enqueue writes there); closed_at is when the next one opened, the moment from which
-- retention counts; dropped_at is set once its four tables were detached and dropped. The
-- partition manager (run by the scheduler) writes it, in the same transaction as the DDL that
-- opens a partition, so a number appears here only once its four tables exist.
--
-- opened_at of partition 1 is the oldest row already there (or now): rows created before the
-- register existed count as created in it.

CREATE TABLE IF NOT EXISTS bbo.partitions (
    number      bigint PRIMARY KEY CHECK (number > 0),
    opened_at   timestamptz NOT NULL DEFAULT bbo.now(),
    closed_at   timestamptz,
    dropped_at  timestamptz,
    CONSTRAINT partitions_closed_after_opened CHECK (closed_at IS NULL OR closed_at >= opened_at),
    CONSTRAINT partitions_dropped_after_closed CHECK (dropped_at IS NULL OR closed_at IS NOT NULL)
);

INSERT INTO bbo.partitions (number, opened_at)
SELECT 1, least(
    (SELECT min(created_at) FROM bbo.background_operation_workers),
    (SELECT min(created_at) FROM bbo.background_operation_workers_cell_local),
    bbo.now())
ON CONFLICT (number) DO NOTHING;

-- enqueue reads the register (the current partition): every role that may read the
-- operations may read it, so an application role granted its privileges before this file
-- existed keeps enqueueing. GRANT is idempotent.
DO $$
DECLARE
    grantee_name text;
BEGIN
    FOR grantee_name IN
        SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                             ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END
        FROM pg_catalog.pg_class AS c, pg_catalog.aclexplode(c.relacl) AS a
        WHERE c.oid IN ('bbo.background_operation_workers'::regclass,
                        'bbo.background_operation_workers_cell_local'::regclass)
          AND a.privilege_type = 'SELECT'
    LOOP
        EXECUTE 'GRANT SELECT ON bbo.partitions TO ' || grantee_name;
    END LOOP;
END
$$;

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0013', 'partitions')
ON CONFLICT (version) DO NOTHING;
