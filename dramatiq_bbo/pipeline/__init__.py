"""The pipeline: scheduler → orchestrator → runner, as dramatiq actors on dramatiq-pg.

``setup(broker)`` (in :mod:`.actors`) declares them. Hand-offs use a transactional outbox
(:mod:`.messages`); every stage is idempotent and the scheduler re-drives stranded work.
"""
