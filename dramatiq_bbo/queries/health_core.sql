-- Named queries of the health layer's core (dramatiq_bbo.health): the hold on an operation,
-- and the catalog reads of the long_transaction and saturation indicators.
--
-- {operations} is filled with the bbo operations table of one scope.

-- name: health_release_hold
-- description: Clear an expired hold once the indicators answer normal again.
UPDATE {operations}
SET on_hold_until = NULL, hold_reason = NULL
WHERE partition = %(partition)s AND id = %(id)s
  AND on_hold_until IS NOT NULL AND on_hold_until <= bbo.now()
RETURNING id;

-- name: health_oldest_transaction
-- description: What holds back this database's xmin horizon the most, relative to the thresholds (backends, prepared transactions, replication slots), and how many sessions this role cannot see.
WITH holders AS (
    SELECT 'session ' || pid || coalesce(' (' || nullif(application_name, '') || ')', '')
               || ' ' || coalesce(state, '') AS holder,
           extract(epoch FROM now() - xact_start)::float8 AS age_seconds,
           greatest(age(backend_xid), age(backend_xmin))::bigint AS xid_age
    FROM pg_stat_activity
    WHERE datname = current_database()
      AND pid <> pg_backend_pid()
      AND (backend_type = 'client backend' OR backend_type IS NULL)
      AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
    UNION ALL
    SELECT 'prepared transaction ' || quote_literal(gid),
           extract(epoch FROM now() - prepared)::float8,
           age(transaction)::bigint
    FROM pg_prepared_xacts
    WHERE database = current_database()
    UNION ALL
    SELECT 'replication slot ' || quote_literal(slot_name), NULL, age(xmin)::bigint
    FROM pg_replication_slots
    WHERE xmin IS NOT NULL AND (database IS NULL OR database = current_database())
),
worst AS (
    SELECT holder, age_seconds, xid_age
    FROM holders
    ORDER BY greatest(coalesce(age_seconds, 0) / greatest(%(max_seconds)s, 0.001),
                      coalesce(xid_age, 0)::float8 / greatest(%(max_xids)s, 1)) DESC
    LIMIT 1
)
SELECT (SELECT holder FROM worst) AS holder,
       (SELECT age_seconds FROM worst) AS age_seconds,
       (SELECT xid_age FROM worst) AS xid_age,
       (SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND backend_type IS NULL AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL))
           AS hidden;

-- name: health_connection_saturation
-- description: Client backends on the server (sessions of other roles, whose type this role may not read, count when they have a user) and max_connections.
SELECT count(*) FILTER (WHERE backend_type = 'client backend'
                           OR (backend_type IS NULL AND usesysid IS NOT NULL)) AS backends,
       current_setting('max_connections')::int AS max_connections
FROM pg_stat_activity;
