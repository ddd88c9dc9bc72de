-- Named queries of the transactional outbox (dramatiq_bbo.pipeline.outbox): dramatiq-pg's own
-- enqueue statement, run on the caller's connection so it commits with the caller's work.
--
-- {queue} is filled by dramatiq_bbo.queries.query() with dramatiq-pg's queue table
-- ("dramatiq"."queue" unless the broker was built with another schema or prefix).

-- name: outbox_enqueue_message
-- description: Upsert one dramatiq message as 'queued' and NOTIFY its queue, like dramatiq-pg's broker.enqueue.
WITH enqueued AS (
    INSERT INTO {queue} (queue_name, message_id, "state", message)
    VALUES (%(queue_name)s, %(message_id)s::uuid, 'queued', %(message)s)
    ON CONFLICT (message_id)
        DO UPDATE SET
            "state" = 'queued',
            message = EXCLUDED.message,
            queue_name = EXCLUDED.queue_name
    RETURNING queue_name, message
)
SELECT
    pg_notify('dramatiq.' || queue_name || '.enqueue',
        CASE WHEN octet_length(message::text) >= 8000
        THEN jsonb_build_object('message_id', %(message_id)s::text)::text
        ELSE message::text
        END
    )
FROM enqueued;
