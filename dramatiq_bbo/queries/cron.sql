-- Named queries of the cron operations (dramatiq_bbo.pipeline.cron_operations).
--
-- {operations} is the cell-local operations table (cron operations are cell-local).

-- name: cron_recent_operation
-- description: The newest operation of one configuration created less than %(seconds)s ago, whatever its status (a cron slot fired twice).
SELECT *
FROM {operations}
WHERE job_class_name = %(job_class_name)s
  AND table_schema = %(table_schema)s
  AND table_name = %(table_name)s
  AND column_name = %(column_name)s
  AND database_name = %(database_name)s
  AND job_arguments = %(job_arguments)s::jsonb
  AND created_at > now() - make_interval(secs => %(seconds)s)
ORDER BY created_at DESC, id DESC
LIMIT 1;
