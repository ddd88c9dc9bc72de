-- Named queries of the cron operations (dramatiq_bbo.pipeline.schedules).
--
-- {operations} is the cell-local operations table (cron operations are cell-local).

-- name: cron_recent_operation
-- description: The newest operation of one configuration created less than %(seconds)s ago, whatever its status (a cron slot fired twice).
SELECT *
FROM {operations}
WHERE {same_configuration}
  AND created_at > bbo.now() - make_interval(secs => %(seconds)s)
ORDER BY created_at DESC, id DESC
LIMIT 1;
