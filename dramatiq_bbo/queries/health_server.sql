-- Named queries of the server-state health indicators (dramatiq_bbo.health: autovacuum,
-- archive, wal_rate, replication). They only read catalogs and statistics views.

-- name: health_autovacuum_workers
-- description: Autovacuum workers (or, hidden from the role, vacuums) of this database on a table's relations.
WITH target AS (
    SELECT to_regclass(
        CASE WHEN %(schema)s::text IS NULL THEN '' ELSE quote_ident(%(schema)s::text) || '.' END
        || quote_ident(%(name)s::text)
    ) AS oid
), tree AS (
    SELECT target.oid FROM target WHERE target.oid IS NOT NULL
    UNION
    SELECT t.relid FROM target, pg_catalog.pg_partition_tree(target.oid) AS t
), relations AS (
    SELECT tree.oid FROM tree
    UNION
    SELECT c.reltoastrelid FROM tree JOIN pg_catalog.pg_class AS c ON c.oid = tree.oid
    WHERE c.reltoastrelid <> 0
)
SELECT (SELECT target.oid IS NOT NULL FROM target) AS table_exists,
       a.pid,
       a.query,
       (SELECT format('%%I.%%I', pn.nspname, pc.relname)
        FROM pg_catalog.pg_class AS pc
        JOIN pg_catalog.pg_namespace AS pn ON pn.oid = pc.relnamespace
        WHERE pc.oid = p.relid) AS progress_relation,
       p.relid IN (SELECT relations.oid FROM relations) AS progress_on_table,
       p.phase,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS seconds,
       locked.relations AS locked_relations,
       locked.wraparound_age
FROM pg_catalog.pg_stat_activity AS a
LEFT JOIN pg_catalog.pg_stat_progress_vacuum AS p ON p.pid = a.pid
CROSS JOIN LATERAL (
    SELECT array_agg(format('%%I.%%I', n.nspname, c.relname) ORDER BY l.relation) AS relations,
           bool_or(
               age(c.relfrozenxid) >= least(
                   current_setting('autovacuum_freeze_max_age')::bigint,
                   (SELECT o.option_value::bigint
                    FROM pg_catalog.pg_options_to_table(c.reloptions) AS o
                    WHERE o.option_name = 'autovacuum_freeze_max_age'))
               OR mxid_age(c.relminmxid) >= least(
                   current_setting('autovacuum_multixact_freeze_max_age')::bigint,
                   (SELECT o.option_value::bigint
                    FROM pg_catalog.pg_options_to_table(c.reloptions) AS o
                    WHERE o.option_name = 'autovacuum_multixact_freeze_max_age'))
           ) AS wraparound_age
    FROM pg_catalog.pg_locks AS l
    JOIN pg_catalog.pg_class AS c ON c.oid = l.relation
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE l.pid = a.pid AND l.locktype = 'relation' AND l.granted
      AND l.mode = 'ShareUpdateExclusiveLock'
      AND l.relation IN (SELECT relations.oid FROM relations)
) AS locked
WHERE a.datname = current_database()
  -- Without pg_read_all_stats backend_type is hidden: a vacuum in progress is all we see.
  AND (a.backend_type = 'autovacuum worker' OR (a.backend_type IS NULL AND p.pid IS NOT NULL))
UNION ALL
-- One row even when no worker runs, to tell whether the table exists.
SELECT (SELECT target.oid IS NOT NULL FROM target), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
ORDER BY 2 NULLS FIRST;

-- name: health_archive_state
-- description: Whether this server archives WAL, and what pg_stat_archiver says (readable by any role).
SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
       current_setting('archive_mode') AS archive_mode,
       (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size')
           AS wal_segment_size,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL
            ELSE pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) END AS current_wal,
       s.last_archived_wal,
       s.last_failed_wal,
       s.failed_count,
       s.last_failed_time
FROM pg_catalog.pg_stat_archiver AS s;

-- name: health_archive_ready_files
-- description: Files waiting for archival (.ready status files); needs superuser or pg_monitor.
SELECT count(*) AS ready,
       min(substr(name, 1, length(name) - 6)) AS oldest
FROM pg_catalog.pg_ls_archive_statusdir()
WHERE name LIKE '%%.ready';

-- name: health_wal_position
-- description: The current WAL insert position (NULL on a standby).
SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL
            ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::float8
       END AS position;

-- name: health_replication_lag
-- description: Each connected standby's replay lag in bytes and seconds (NULL details without pg_read_all_stats).
SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
       r.pid,
       r.application_name,
       r.client_addr::text AS client_addr,
       r.state,
       CASE WHEN r.replay_lsn IS NOT NULL AND NOT pg_catalog.pg_is_in_recovery() THEN
           pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.replay_lsn)::float8
       END AS replay_bytes,
       extract(epoch FROM r.replay_lag)::float8 AS replay_seconds
FROM (SELECT 1) AS one
LEFT JOIN pg_catalog.pg_stat_replication AS r ON true
ORDER BY r.pid NULLS FIRST;
