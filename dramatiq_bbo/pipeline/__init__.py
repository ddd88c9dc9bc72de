"""The pipeline: scheduler → orchestrator → runner, as dramatiq actors on dramatiq-pg.

``setup(broker)`` (in :mod:`.actors`) declares them. Hand-offs use a transactional outbox
(:mod:`.messages`, :mod:`.outbox`); every stage is idempotent and the scheduler re-drives
stranded work. Also here: the runtime installed by ``setup`` (:mod:`.runtime`), the holds an
operation can be put on (:mod:`.table_hold`, :mod:`.unknown_class`, :mod:`.middleware_hold`),
and cron schedules (:mod:`.schedules`, with cron expressions in :mod:`.cron`).
"""
