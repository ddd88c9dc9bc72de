-- Named queries of the learned batch sizes (dramatiq_bbo.jobs.learned_sizes): the size the
-- optimizer reached, kept per configuration when an operation finishes, and read back when
-- the next operation of that configuration is enqueued.

-- name: learning_remember
-- description: Keep the batch size a finishing operation's optimizer reached as its configuration's lesson (the latest wins).
INSERT INTO bbo.learned_batch_sizes AS l (
    job_class_name, table_schema, table_name, column_name, database_name, batch_size,
    target_duration_seconds, operation_id, learned_at
) VALUES (
    %(job_class_name)s, %(table_schema)s, %(table_name)s, %(column_name)s, %(database_name)s,
    %(batch_size)s, %(target_duration_seconds)s, %(operation_id)s, bbo.now()
)
ON CONFLICT (job_class_name, table_schema, table_name, column_name, database_name)
DO UPDATE SET batch_size = excluded.batch_size,
              target_duration_seconds = excluded.target_duration_seconds,
              operation_id = excluded.operation_id,
              learned_at = excluded.learned_at;

-- name: learning_recall
-- description: The batch size a configuration learned, and the job duration it was aimed at; no row when none of its operations finished under the optimizer.
SELECT batch_size, target_duration_seconds
FROM bbo.learned_batch_sizes
WHERE job_class_name = %(job_class_name)s
  AND table_schema = %(table_schema)s
  AND table_name = %(table_name)s
  AND column_name = %(column_name)s
  AND database_name = %(database_name)s;
