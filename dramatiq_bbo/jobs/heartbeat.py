"""The heartbeat: the leases this process holds stay alive while their work runs, and only then.

A lease (``lease_seconds``, 30 s by default) is short so that a dead or frozen runner's job is
taken over soon; a job runs far longer, so the lease is renewed while it runs. One daemon
thread per process renews every lease held here, every third of ``lease_seconds``, each in a
short transaction of its own on a pooled connection: the operation's stage lease (when this
process holds it) then the job's lease — the library's lock order. It runs beside the job's
own thread, so a long sub-batch (even a single long statement) keeps its lease; a killed
process renews nothing, and a frozen one (SIGSTOP) renews nothing either.

A sub-batch does not keep its job row locked (see :mod:`dramatiq_bbo.walk.checkpoint`), so a renewal
never waits on one. When a renewal finds that the job belongs to someone else (its lease
expired and another runner took it over), the lease is marked lost and the runner stops at
its next sub-batch boundary; its checkpoint would refuse to commit anyway.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..db import REGISTRY
from ..logs import logger
from ..queries import query
from ..state.records import JobRecord, OperationRecord
from ..state.store import tables_for
from ..walk.statements import one_transaction
from ..walk.timeouts import set_lock_timeout

#: renewals per lease period: a lease survives two missed heartbeats
HEARTBEATS_PER_LEASE = 3


@dataclass(eq=False)
class Lease:
    """What one holder in this process keeps alive: an operation's stage lease (``stage_token``)
    and/or a running job's lease (``job`` owned by ``owner``)."""

    database: str
    operation: OperationRecord
    job: JobRecord | None = None
    owner: str | None = None
    stage_token: str | None = None
    #: set when the job turned out to belong to another runner
    lost: threading.Event = field(default_factory=threading.Event)


class Heartbeat:
    """The process's heartbeat thread and the leases it renews (one instance: ``HEARTBEAT``)."""

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(
        self,
        database: str,
        operation: OperationRecord,
        *,
        job: JobRecord | None = None,
        owner: str | None = None,
        stage_token: str | None = None,
    ) -> Lease:
        """Keep these leases alive from now on, until :meth:`release`."""
        lease = Lease(database, operation, job, owner, stage_token)
        with self._lock:
            if self._pid != os.getpid():  # inherited through fork: the parent's, not ours
                self._leases.clear()
                self._thread = None
            self._leases.add(lease)
            if self._thread is None or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._loop, name="bbo-heartbeat", daemon=True
                )
                self._thread.start()
        return lease

    def release(self, lease: Lease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def leases(self) -> list[Lease]:
        with self._lock:
            return list(self._leases)

    def beat(self) -> None:
        """Renew every lease held now (the thread calls it; tests may too)."""
        seconds = float(REGISTRY.settings.lease_seconds)
        for lease in self.leases():
            try:
                renew(lease, seconds)
            except Exception:  # a missed beat is survivable; the next one retries
                logger.exception("heartbeat of operation %s failed", lease.operation.id)

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            time.sleep(max(float(REGISTRY.settings.lease_seconds) / HEARTBEATS_PER_LEASE, 0.05))
            with self._lock:
                if self._thread is not me:
                    return
                if not self._leases:  # nothing to renew: the next hold() starts a new thread
                    self._thread = None
                    return
            self.beat()


def renew(lease: Lease, seconds: float) -> None:
    """One renewal of ``lease``: its stage, then its job, in one transaction."""
    operations, jobs = tables_for(lease.operation)
    settings = REGISTRY.settings
    with REGISTRY.connection(lease.database) as conn:
        with one_transaction(conn):
            set_lock_timeout(conn, int(settings.lock_timeout_ms) / 1000)
            if lease.stage_token is not None:
                conn.execute(
                    query("heartbeat_renew_stage", operations=operations),
                    {
                        "lease_seconds": seconds,
                        "partition": lease.operation.partition,
                        "id": lease.operation.id,
                        "token": lease.stage_token,
                    },
                )
            renewed = None
            if lease.job is not None:
                renewed = conn.execute(
                    query("heartbeat_renew_job", jobs=jobs),
                    {
                        "lease_seconds": seconds,
                        "partition": lease.job.partition,
                        "id": lease.job.id,
                        "owner": lease.owner,
                    },
                )
        if renewed is not None and renewed.fetchone() is None:
            if not lease.lost.is_set():
                logger.warning(
                    "job %s of operation %s is held by another runner now; stopping it",
                    lease.job.id if lease.job else None,
                    lease.operation.id,
                )
            lease.lost.set()


def lease_lost_check(
    database: str, job: JobRecord, stop_check: Callable[[], str | None] | None
) -> Callable[[], str | None]:
    """``stop_check`` plus: stop when the heartbeat found this runner's job taken over."""

    def check() -> str | None:
        for lease in HEARTBEAT.leases():
            if lease.job is job and lease.lost.is_set():
                return "lease_lost"
        return stop_check() if stop_check is not None else None

    return check


def take_stage(database: str, operation: OperationRecord, token: str) -> bool:
    """Take the operation's stage lease for ``token`` (overriding whoever held it); False when
    the operation is not queued or active."""
    operations, _ = tables_for(operation)
    with REGISTRY.connection(database) as conn:
        row = conn.execute(
            query("heartbeat_take_stage", operations=operations),
            {
                "token": token,
                "lease_seconds": float(REGISTRY.settings.lease_seconds),
                "partition": operation.partition,
                "id": operation.id,
            },
        ).fetchone()
    return row is not None


def release_stage(database: str, operation: OperationRecord, token: str) -> None:
    """Give the operation's stage lease back if ``token`` still holds it (best effort)."""
    operations, _ = tables_for(operation)
    try:
        with REGISTRY.connection(database) as conn:
            conn.execute(
                query("heartbeat_release_stage", operations=operations),
                {"partition": operation.partition, "id": operation.id, "token": token},
            )
    except Exception:  # the lease expires by itself
        logger.exception("releasing the stage lease of operation %s failed", operation.id)


HEARTBEAT = Heartbeat()
