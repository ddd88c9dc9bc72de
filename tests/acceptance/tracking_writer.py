"""A writer process of the tracking acceptance test: ``python -m tests.acceptance.tracking_writer
DSN TRACKED_ID PROCESS PROCESSES THREADS TOTAL``.

Its threads record their share of the outcomes (item ``i`` belongs to writer ``i % writers``;
every tenth item fails) with the public API, each call its own transaction. The notifier
configured here writes each call into ``finaliser_calls`` (created by the test), so the test
sees how many finalisers ran, in any process, and what they saw.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo import tracking


def record_call(dsn: str) -> Any:
    def notify(operation: Any, failed_items: Sequence[Any]) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO finaliser_calls (successful, failed, items, entity_ids)"
                " VALUES (%s, %s, %s, %s)",
                [
                    operation.successful_items,
                    operation.failed_items,
                    len(failed_items),
                    json.dumps(sorted(int(i.entity_id) for i in failed_items)),
                ],
            )

    return notify


def write_share(tracked: int, writer: int, writers: int, total: int) -> None:
    for i in range(writer, total, writers):
        if i % 10 == 0:
            tracking.add_failed_item(
                tracked,
                entity_id=i,
                entity_type="Project",
                entity_name=f"project {i}",
                entity_full_path=f"acme/p{i}",
                error_message="Permission denied",
                error_code="service_error",
            )
        else:
            tracking.increment_successful(tracked)


def main(argv: list[str]) -> None:
    dsn, tracked, process, processes, threads, total = argv
    bbo.configure(dsn=dsn, tracking_notifier=record_call(dsn), pool_max_size=int(threads))
    writers = int(processes) * int(threads)
    workers = [
        threading.Thread(
            target=write_share,
            args=(int(tracked), int(process) * int(threads) + t, writers, int(total)),
        )
        for t in range(int(threads))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    bbo.reset()


if __name__ == "__main__":
    main(sys.argv[1:])
