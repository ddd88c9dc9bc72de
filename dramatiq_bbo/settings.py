"""Operator-tunable settings with their documented defaults and their bounds.

Every number an operator may want to change lives here, not as a constant in the code that
uses it. ``bbo.configure(**overrides)`` replaces fields by name; an unknown name is refused
with :class:`~dramatiq_bbo.errors.ConfigurationError` so a typo never silently falls back to
the default.

Bounds. Each field declares what it accepts in one place, its ``field(metadata=...)`` built
by :func:`setting`: the kind (int, float or str), the lowest and highest value, and for
strings a pattern. ``configure()`` checks every override against them before changing
anything, so NaN, infinities, negative or zero leases, absurd magnitudes (a lease of ten
years, a batch beyond int32), empty queue names or strings holding NUL are refused at once
with an error naming the setting and the value, instead of failing later inside the
database. A new setting adds its bounds the same way; enqueue's per-call sizes are checked
against the very same bounds (:func:`check_value`).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import BBOError, ConfigurationError
from .health_thresholds import HealthSettings

INT4_MAX = 2**31 - 1
#: one day, in milliseconds and in seconds: the longest sane timeout or lease
_DAY_MS = 86_400_000
_DAY_S = 86_400.0


@dataclass(frozen=True)
class Bounds:
    """What one setting accepts: ``kind`` in ``[low, high]`` (``low`` excluded when
    ``low_open``); strings match ``pattern`` and hold no NUL or lone surrogate."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    pattern: str | None = None

    def describe(self) -> str:
        """``an int > 0``, ``a number >= 0``...: the kind and the lower bound."""
        if self.kind is str:
            return f"a string matching {self.pattern}" if self.pattern else "a string"
        kind = "an int" if self.kind is int else "a number"
        if self.low is None:
            return kind
        if self.kind is int and self.low == 1 and not self.low_open:
            return f"{kind} > 0"
        return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"

    def accepted(self) -> str:
        if self.kind is str or self.high is None:
            return ""
        low = "" if self.low is None else f"{'above ' if self.low_open else ''}{self.low:g}"
        return f"; accepted: {low}..{self.high:g}" if low else f"; at most {self.high:g}"


def setting(
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    pattern: str | None = None,
) -> Any:
    """A settings field whose bounds live next to its default (see the module docstring)."""
    bounds = Bounds(type(default), low, high, low_open, pattern)
    return field(default=default, metadata={"bounds": bounds})


def bounds_of(name: str) -> Bounds | None:
    for f in dataclasses.fields(Settings):
        if f.name == name:
            bound = f.metadata.get("bounds")
            return bound if isinstance(bound, Bounds) else None
    return None


def check_value(
    name: str,
    value: Any,
    *,
    origin: str | None = None,
    error: type[BBOError] = ConfigurationError,
) -> Any:
    """``value`` checked against the bounds of setting ``name`` (an int for an int setting,
    a float for a float one), or ``error`` naming the setting, the value and ``origin``."""
    bounds = bounds_of(name)
    if bounds is None:
        return value
    where = f" ({origin})" if origin else ""
    wrong = error(f"{name} must be {bounds.describe()}, got {value!r}{where}{bounds.accepted()}")
    if bounds.kind is str:
        if not isinstance(value, str) or not clean_text(value):
            raise wrong
        if bounds.pattern is not None and not re.fullmatch(bounds.pattern, value):
            raise wrong
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong
    if bounds.kind is int and not isinstance(value, int):
        raise wrong
    if not math.isfinite(value):
        raise wrong
    if bounds.low is not None and (value < bounds.low or (bounds.low_open and value == bounds.low)):
        raise wrong
    if bounds.high is not None and value > bounds.high:
        raise wrong
    return float(value) if bounds.kind is float else value


def clean_text(text: str) -> bool:
    """No NUL (Postgres text cannot hold it) and no lone surrogate (not encodable as UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Settings:
    """Library-wide settings. Per-class attributes and per-enqueue arguments override the
    operation defaults (``batch_size`` ... ``interval_seconds``)."""

    # -- operation defaults --------------------------------------------------------------
    #: rows per job (one keyset batch)
    batch_size: int = setting(1_000, low=1, high=INT4_MAX)
    #: rows per sub-batch (one short transaction with its checkpoint)
    sub_batch_size: int = setting(100, low=1, high=INT4_MAX)
    #: sleep between two sub-batches, in milliseconds (at most an hour)
    pause_ms: int = setting(100, low=0, high=3_600_000)
    #: delay between two jobs of one operation, in seconds (at most 30 days)
    interval_seconds: float = setting(120.0, low=0, high=30 * _DAY_S)
    #: bounds for the batch optimizer
    min_batch_size: int = setting(1_000, low=1, high=INT4_MAX)
    max_batch_size: int = setting(2_000_000, low=1, high=INT4_MAX)

    # -- guards on every sub-batch transaction ------------------------------------------------
    #: SET LOCAL statement_timeout for each sub-batch, in milliseconds (0 would disable it)
    statement_timeout_ms: int = setting(30_000, low=1, high=_DAY_MS)
    #: SET LOCAL lock_timeout for each sub-batch, in milliseconds (0 would disable it)
    lock_timeout_ms: int = setting(5_000, low=1, high=_DAY_MS)
    #: synchronous_commit of the walk's sub-batch transactions. ``off`` by default: a
    #: sub-batch and its checkpoint commit in one transaction, so a server crash can only
    #: lose the last few sub-batches together with their checkpoints (consistently: the walk
    #: resumes from the last durable checkpoint and does them again), and the walk does not
    #: wait for a WAL flush per sub-batch. Job ends and every other transaction keep the
    #: server's setting, and a job's end flushes the WAL of all its sub-batches before any
    #: message about it is sent. ``on`` (or ``remote_apply``...) waits as the server would.
    sub_batch_synchronous_commit: str = setting(
        "off", pattern="^(on|off|local|remote_write|remote_apply)$"
    )

    # -- enqueue limits -------------------------------------------------------------------
    #: largest accepted job_arguments, serialised, in bytes (jsonb holds at most 255 MiB)
    max_arguments_bytes: int = setting(64 * 1024, low=2, high=255 * 1024 * 1024)
    #: deepest accepted nesting of job_arguments (objects and arrays within each other)
    max_arguments_depth: int = setting(32, low=1, high=1_000)

    # -- pipeline -----------------------------------------------------------------------------
    #: dramatiq queue the actors live on (dramatiq's queue name rules)
    queue_name: str = setting("background_operations", pattern=r"[a-zA-Z_][a-zA-Z0-9._-]{0,99}")
    #: jobs running at once per database
    max_running_jobs: int = setting(10, low=1, high=10_000)
    #: attempts per job before it counts as failed for good
    max_attempts: int = setting(3, low=1, high=1_000)
    #: a job's time budget as a fraction of the operation interval. Above the optimizer's
    #: target (0.95): the budget is a guard against a job gone slow, not the sizing target.
    job_budget_fraction: float = setting(1.5, low=0, low_open=True, high=100)
    #: a job's time budget when the interval is 0 (seconds)
    min_job_budget_seconds: float = setting(30.0, low=0, low_open=True, high=_DAY_S)
    #: how long a health stop holds an operation, in seconds
    health_hold_seconds: float = setting(600.0, low=0, low_open=True, high=_DAY_S)
    #: lease on a running job and on an operation's stage: renewed by a heartbeat every
    #: third of it while the job runs, so a dead or frozen runner's job is taken over about
    #: this long after its last heartbeat (see docs/pipeline.md, "Liveness")
    lease_seconds: float = setting(30.0, low=0.1, high=_DAY_S)
    #: how often every worker process runs a scheduler pass (expired leases recovered,
    #: operations without a live stage re-driven), in seconds; 0 leaves it to the cron tick
    scheduler_pass_seconds: float = setting(5.0, low=0, high=3_600.0)
    #: how long a due cell-local operation may wait behind organization-scoped ones, in
    #: seconds: from 90% of it on, it takes the next free slot before them, so that it is
    #: served within the bound (dramatiq_bbo.pipeline.picking).
    #: 60 s: long beside a small job, so a burst of user work that clears within a minute keeps
    #: all the capacity; short beside the default 120 s interval, so system work starved by a
    #: steady stream of user operations runs at most about one minute late per job.
    max_wait_seconds: float = setting(60.0, low=0, low_open=True, high=_DAY_S)
    #: the server ends a sub-batch's session idle inside its transaction for this long
    #: (idle_in_transaction_session_timeout), releasing the locks of a frozen runner before
    #: its lease expires; keep it under two thirds of lease_seconds; 0 disables it
    sub_batch_idle_timeout_seconds: float = setting(10.0, low=0, high=_DAY_S)
    #: interruptions (worker shutdown, expired lease) a job may have for free; each one past
    #: this counts as a failed attempt
    max_interruptions: int = setting(15, low=0, high=10_000)
    #: how long an operation whose class a worker cannot import is held before another
    #: worker (perhaps one that knows the class) tries it again, in seconds
    unknown_class_hold_seconds: float = setting(60.0, low=0, low_open=True, high=_DAY_S)
    #: lock_timeout of a scheduler pass's transactions, in seconds: they wait only for the
    #: per-database capacity lock; past it the pass leaves the dispatch to the next one
    scheduler_lock_timeout_seconds: float = setting(5.0, low=0, low_open=True, high=3_600.0)
    #: lock_timeout of the short transaction writing a health hold, in seconds; past it the
    #: hold is not written (logged) and the job stops all the same
    health_hold_lock_timeout_seconds: float = setting(5.0, low=0, low_open=True, high=3_600.0)
    #: how long a stopping worker waits for its consumer threads before it sends the stage
    #: messages it kept for the other workers, in seconds
    shutdown_consumer_stop_seconds: float = setting(10.0, low=0, high=3_600.0)

    # -- sliding partitions (dramatiq_bbo.partitions, docs/partitions.md) ----------------------
    #: the scheduler opens the next partition of the state tables once the current one's
    #: oldest row is this old, in days (at most a year)
    partition_duration_days: float = setting(7.0, low=0, low_open=True, high=366.0)
    #: a partition is detached and dropped this long after it closed (the next one opened),
    #: in days, once it holds no unfinished operation and no pending or running job
    retention_days: float = setting(14.0, low=0, low_open=True, high=3_660.0)

    # -- connections ----------------------------------------------------------------------
    #: how long a connect or a pool checkout may take before ConnectionFailed (with the cause)
    connect_timeout_seconds: float = setting(5.0, low=0, low_open=True, high=3_600.0)
    #: pooled connections per process and database, for our own bookkeeping statements
    pool_max_size: int = setting(8, low=1, high=1_000)
    #: how long a step that lost its connection keeps retrying before it gives up (seconds)
    reconnect_seconds: float = setting(60.0, low=0, high=_DAY_S)
    #: first delay between two retries after a lost connection; it doubles each time...
    reconnect_backoff_seconds: float = setting(0.1, low=0, low_open=True, high=3_600.0)
    #: ...up to this many seconds
    reconnect_backoff_max_seconds: float = setting(5.0, low=0, low_open=True, high=3_600.0)

    # -- operator surfaces ------------------------------------------------------------------
    #: who may run a mutating ChatOps command (pause, resume, cancel, retry, set, disable,
    #: enable): ``fn(user, command, operation_id) -> bool`` (``operation_id`` is the class name
    #: for disable/enable). None, the default, refuses every mutating chat command.
    chatops_authorize: Callable[[str, str, str | None], bool] | None = field(
        default=None, metadata={"callable": True}
    )

    # -- organizations (docs/organizations.md) -----------------------------------------------
    #: whether an organization is read-only now: ``fn(database_name, organization_id)`` returning
    #: False/None (writable), True or a reason string (read-only); None, the default, reads the
    #: table ``bbo.read_only_organizations`` (dramatiq_bbo.read_only)
    organization_read_only: Callable[[str, int], bool | str | None] | None = field(
        default=None, metadata={"callable": ("database_name", "organization_id")}
    )
    #: how long an operation of a read-only organization is held before its organization is
    #: checked again, in seconds: it resumes at most this long after the flag is lifted
    read_only_hold_seconds: float = setting(60.0, low=0, low_open=True, high=_DAY_S)

    # -- tracked bulk item operations (dramatiq_bbo.tracking, docs/tracking.md) ---------------
    #: how long a tracked operation and its failed items stay visible, in hours
    tracking_ttl_hours: float = setting(72.0, low=0, low_open=True, high=24 * 366)
    #: base URL of the links to failed items in the email (``<base>/<full path>``); "" for none
    tracking_base_url: str = setting("")
    #: who gets the failure email: ``fn(user_id) -> email address``; None: nobody (recorded)
    tracking_recipient: Callable[[int], str] | None = field(
        default=None, metadata={"callable": ("user_id",)}
    )
    #: what is told about a finished operation with failures: ``fn(operation, failed_items)``
    #: or an object with ``notify(operation, failed_items)``; None: the email over SMTP
    tracking_notifier: Any = field(
        default=None, metadata={"callable": ("operation", "failed_items"), "method": "notify"}
    )
    #: attempts at sending one notification, and the first delay between two (doubling)
    tracking_notification_attempts: int = setting(3, low=1, high=100)
    tracking_notification_backoff_seconds: float = setting(1.0, low=0, high=3_600.0)
    #: rows the purge deletes per statement, and statements per purge run
    tracking_purge_batch_size: int = setting(1_000, low=1, high=1_000_000)
    tracking_purge_max_batches: int = setting(100, low=1, high=1_000_000)
    #: SMTP server of the default notifier (STARTTLS and login only when asked for)
    smtp_host: str = setting("localhost")
    smtp_port: int = setting(25, low=1, high=65_535)
    smtp_starttls: bool = False
    smtp_username: str = setting("")
    smtp_password: str = field(default="", repr=False, metadata={"bounds": Bounds(str)})
    smtp_timeout_seconds: float = setting(30.0, low=0, low_open=True, high=3_600.0)
    mail_from: str = setting("dramatiq-bbo@localhost")

    # -- health thresholds (see dramatiq_bbo.health) ---------------------------------------------
    #: typed and frozen; ``configure(health={...})`` replaces thresholds by name
    health: HealthSettings = field(default_factory=HealthSettings)

    def replace(self, **overrides: Any) -> Settings:
        """A copy with ``overrides`` applied; refuses unknown names and values out of their
        bounds (then nothing is applied)."""
        known = {f.name: f for f in dataclasses.fields(self)}
        checked: dict[str, Any] = {}
        for name, value in overrides.items():
            if not isinstance(name, str) or name not in known:
                raise ConfigurationError(
                    f"unknown setting {name!r}; known settings: {', '.join(sorted(known))}"
                )
            checked[name] = _checked(name, value, getattr(self, name))
        if "health" in checked:  # a mapping: its thresholds over the defaults, all checked
            checked["health"] = HealthSettings.of(checked["health"])
        return dataclasses.replace(self, **checked)


def _checked(name: str, value: Any, default: Any) -> Any:
    if bounds_of(name) is not None:
        return check_value(name, value, origin="configure()")
    if _takes_callable(name):
        return _checked_hook(name, value)
    # A field declared without bounds (declare them with setting()): at least the kind of
    # its default, and a finite number.
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigurationError(f"setting {name!r} must be True or False, got {value!r}")
    elif isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"setting {name!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigurationError(f"setting {name!r} must be finite, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str) or not clean_text(value):
            raise ConfigurationError(
                f"setting {name!r} must be a string without NUL, got {value!r}"
            )
    return value


_COUNTS = {1: "one argument", 2: "two arguments", 3: "three arguments"}


def _checked_hook(name: str, value: Any) -> Any:
    """A hook setting: None, or a callable taking its declared positional arguments (by
    default the three of ``chatops_authorize``), or an object with its declared method."""
    if value is None:
        return None
    metadata = next(f.metadata for f in dataclasses.fields(Settings) if f.name == name)
    arguments = metadata["callable"]
    if not isinstance(arguments, tuple):
        arguments = ("user", "command", "operation_id")
    method = metadata.get("method")
    function = getattr(value, method, None) if method and not callable(value) else value
    if not callable(function):
        kind = f"a callable, an object with {method}(), or None" if method else "a callable or None"
        raise ConfigurationError(
            f"setting {name!r} must be {kind}, got {type(value).__name__} {value!r}"
        )
    try:
        inspect.signature(function).bind(*arguments)
    except TypeError:
        raise ConfigurationError(
            f"setting {name!r} must take {_COUNTS.get(len(arguments), 'more arguments')} "
            f"({', '.join(arguments)}), got {value!r}"
        ) from None
    except ValueError:  # a builtin without a readable signature: trust it
        pass
    return value


def _takes_callable(name: str) -> bool:
    """Whether setting ``name`` holds a function (a hook) rather than a value."""
    return any(f.name == name and f.metadata.get("callable") for f in dataclasses.fields(Settings))


def check_database(name: Any, dsn: Any = None) -> None:
    """A database name and DSN given to ``configure()``, checked before anything changes:
    names are 1..63 characters of clean text, a DSN a string libpq can parse."""
    if not isinstance(name, str) or not 1 <= len(name) <= 63 or not clean_text(name):
        raise ConfigurationError(
            f"database name must be a string of 1..63 characters without NUL, got {name!r}"
        )
    if dsn is None:
        return
    if not isinstance(dsn, str) or not dsn.strip() or not clean_text(dsn):
        raise ConfigurationError(
            f"the DSN of database {name!r} must be a non-empty string without NUL or lone "
            f"surrogates, got a {type(dsn).__name__}"
        )
    import psycopg

    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except (psycopg.Error, ValueError) as exc:
        raise ConfigurationError(
            f"the DSN of database {name!r} is malformed: {str(exc).strip()}"
        ) from None
