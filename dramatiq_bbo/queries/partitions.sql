-- Named queries of the partition manager (dramatiq_bbo.partitions): the register of
-- partitions (bbo.partitions, schema 0013), the rows that keep a partition alive, and the
-- moves of idle unfinished operations into the current partition.
--
-- {operations}, {jobs} are the partitioned parents of one scope; {workers_child},
-- {child} and the like a partition of theirs, all filled by dramatiq_bbo.queries.query()
-- with identifiers our code builds (dramatiq_bbo.partitions.tables), never from input.

-- name: partitions_current
-- description: The current partition: the newest one not dropped (1 before the register has a row, as before schema 0013).
SELECT coalesce(max(number), 1) FROM bbo.partitions WHERE dropped_at IS NULL;

-- name: partitions_register
-- description: Every partition not dropped yet, oldest first, with the clock's now (for ages).
SELECT number, opened_at, closed_at, bbo.now() AS now
FROM bbo.partitions
WHERE dropped_at IS NULL
ORDER BY number;

-- name: partitions_record_open
-- description: Register partition %(number)s as opened now and close the one before it (in the transaction that created its four tables); nothing when it is registered already.
WITH opened AS (
    INSERT INTO bbo.partitions (number, opened_at)
    VALUES (%(number)s, bbo.now())
    ON CONFLICT (number) DO NOTHING
    RETURNING number
)
UPDATE bbo.partitions
SET closed_at = bbo.now()
WHERE number < %(number)s AND closed_at IS NULL AND EXISTS (SELECT FROM opened);

-- name: partitions_record_dropped
-- description: Partition %(number)s's four tables are gone: the register keeps its dates, marked dropped.
UPDATE bbo.partitions SET dropped_at = bbo.now() WHERE number = %(number)s AND dropped_at IS NULL;

-- name: partitions_row_created_between
-- description: Whether partition %(number)s of {parent} holds a row created in [%(since)s, %(until)s]: one of its own (moved rows were created before it opened), old enough to call for the next partition. Read through the parent (its privileges, the partition pruned), stopping at the first such row.
SELECT EXISTS (
    SELECT FROM {parent}
    WHERE partition = %(number)s AND created_at >= %(since)s AND created_at <= %(until)s
);

-- name: partitions_attached
-- description: The partitions of the parent %(parent)s (schema-qualified), their bound's number read from our own naming (<parent>_<number>), and whether a concurrent detach of each is pending (interrupted: to be finalized).
SELECT substring(c.relname FROM '_([0-9]+)$')::bigint AS number, i.inhdetachpending AS pending
FROM pg_catalog.pg_inherits AS i
JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = %(parent)s::regclass
  AND c.relname ~ '_[0-9]+$';

-- name: partitions_table_exists
-- description: Whether the table %(table)s (schema-qualified) exists, attached or not.
SELECT to_regclass(%(table)s) IS NOT NULL;

-- name: partitions_unfinished_operations
-- description: How many unfinished (queued, active, paused) operations the operations partition {child} holds; served by the partial unique index on unfinished configurations.
SELECT count(*) FROM {child} WHERE status IN (0, 1, 2);

-- name: partitions_live_jobs
-- description: How many pending or running jobs the jobs partition {child} holds; served by the partial index on live jobs' leases.
SELECT count(*) FROM {child} WHERE status IN (0, 1);

-- name: partitions_row_counts
-- description: Rows of partition %(number)s of {parent}, read through the parent (its privileges, the partition pruned): all, and the unfinished ones (operations queued, active or paused; jobs pending or running).
SELECT count(*) AS total,
       count(*) FILTER (WHERE status IN (0, 1, 2) AND %(operations)s
                           OR status IN (0, 1) AND NOT %(operations)s) AS unfinished
FROM {parent}
WHERE partition = %(number)s;

-- name: partitions_idle_unfinished
-- description: A piece of the WHERE clause, not a statement: operation o of {operations} is unfinished, in a partition older than %(current)s, and idle: no live stage lease (no stage message is about to address the row by its partition, no run_to_completion holds it) and no job of it running or dispatched under a live lease.
o.partition < %(current)s
  AND o.status IN (0, 1, 2)
  AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= bbo.now())
  AND NOT EXISTS (
      SELECT FROM {jobs} AS j
      WHERE j.worker_id = o.id
        AND (j.status = 1 OR (j.status = 0 AND j.lease_expires_at > bbo.now())))

-- name: partitions_movable_operations
-- description: Up to %(limit)s idle unfinished operations of {operations} in partitions older than %(current)s (read without locks; each is locked and checked again before it moves).
SELECT o.partition, o.id
FROM {operations} AS o
WHERE {partitions_idle_unfinished}
ORDER BY o.partition, o.id
LIMIT %(limit)s;

-- name: partitions_lock_movable_operation
-- description: Lock operation %(id)s if it is still an idle unfinished operation of an older partition, skipping it when another transaction holds its row (a stage is acting on it: left for the next run); its partition.
SELECT o.partition
FROM {operations} AS o
WHERE o.id = %(id)s AND {partitions_idle_unfinished}
FOR UPDATE OF o SKIP LOCKED;

-- name: partitions_move_jobs
-- description: The unfinished jobs (pending, or failed and perhaps retried or split) of operation %(id)s into partition %(current)s, worker_partition with them; the caller holds the operation's row lock (lock order: operation, then job) and checked none runs. Succeeded jobs stay behind: history, dropped with their partition.
UPDATE {jobs}
SET partition = %(current)s, worker_partition = %(current)s
WHERE worker_id = %(id)s AND partition < %(current)s AND status IN (0, 2);

-- name: partitions_move_operation
-- description: Operation %(id)s from partition %(partition)s into partition %(current)s, every other column (cursor, counters, sizes, status, hold) unchanged; its row lock is held.
UPDATE {operations}
SET partition = %(current)s
WHERE partition = %(partition)s AND id = %(id)s;
