"""Sliding partitions: history retired a partition at a time, never by bulk DELETE.

The four state tables are LIST-partitioned on ``partition`` (schema 0001) and
``bbo.partitions`` registers the partition numbers (schema 0013). The manager
(:mod:`.manager`), run by each scheduler pass, opens the next partition of the four tables
when the current one's oldest row is ``partition_duration_days`` old (:mod:`.rotation`),
moves idle unfinished operations and their unfinished jobs into the current partition
(:mod:`.moves`), and detaches and drops a partition ``retention_days`` after it closed once
it holds nothing unfinished (:mod:`.retirement`). :mod:`.listing` is what operators read
(``dramatiq-bbo partitions``). See docs/partitions.md.
"""
