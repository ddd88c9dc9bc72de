"""``BaseOperation``: what an author writes, and the registry that finds it by name.

An operation class says *what to walk* (``cursor``, optional ``scope``) and *what to do with
one sub-batch* (``process``). Batching, checkpoints, pacing, retries and throttling belong to
the framework: an operation class holds no plumbing. An author who needs the loop itself (work
before the first sub-batch or after the last, state carried across sub-batches in local
variables) writes ``perform`` instead, walking ``each_sub_batch()``; the same engine runs
under both, so the checkpoints and the exactly-once guarantee are the same.

A class is checked when it is defined (:mod:`dramatiq_bbo.operation_checks`): exactly one of
``process`` and ``perform``, well-formed values, and no misspelt attribute name.

Classes register themselves by name when defined (``name`` attribute, default the class
name), so the pipeline finds them from the name stored on the operation row, and an unknown
name is refused at enqueue time rather than discovered by a worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import OperationDefinitionError, UnknownOperationClass
from .operation_checks import check_class

if TYPE_CHECKING:  # pragma: no cover
    from .state.records import JobRecord, OperationRecord
    from .walk.sub_batch import SubBatch

_registry: dict[str, type[BaseOperation]] = {}
_registry_lock = threading.Lock()
#: what wraps each walk of a job's sub-batches, ``fn(operation, walk) -> walk``: installed by
#: :func:`wrap_walks` from above (dramatiq_bbo.tracking writes per-item outcomes at each
#: sub-batch's end), so this module depends on none of them
_walk_wrappers: list[Callable[[Any, Iterator[Any]], Iterator[Any]]] = []


def wrap_walks(wrapper: Callable[[Any, Iterator[Any]], Iterator[Any]]) -> None:
    """Wrap every walk of sub-batches from now on (once per wrapper)."""
    if wrapper not in _walk_wrappers:
        _walk_wrappers.append(wrapper)


class BaseOperation:
    """Subclass this, set the class attributes, implement :meth:`process` (or :meth:`perform`).

    Class attributes (all optional); a public name close to one of them is refused as a typo
    (``interval = 0`` for ``interval_seconds``), other names of your own are fine:

    - ``name``: registry name stored on the operation row (default: the class name).
    - ``operation_name``: what the SQL does, for logs and metrics (``"delete_all"``...).
    - ``feature_category``: the owning team or feature.
    - ``cursor``: keyset columns, e.g. ``("id",)`` or ``("partition_id", "id")``. They must be
      NOT NULL, unique together and lead a btree index. Default: ``(column_name,)``.
    - ``database``: name of the configured database holding the table (default ``"main"``).
    - ``model``: a peewee model for the table; if absent one is reflected from the catalog.
      It must be bound to the table the operation is enqueued on (checked at enqueue and
      before every job).
    - ``tables``: the tables the class may run on, e.g. ``("todos", "archive.todos")``;
      enqueue refuses any other. Default: any table outside the refused schemas (see
      :mod:`dramatiq_bbo.enqueueing.table_policy`).
    - ``batch_size``, ``sub_batch_size``, ``pause_ms``, ``interval_seconds``,
      ``min_batch_size``, ``max_batch_size``: per-class defaults over the settings;
      ``enqueue()`` may override them.
    - ``priority``: the default of ``enqueue(priority=...)`` for the class (else 0); higher
      runs first among operations of the same kind.
    """

    name: ClassVar[str]
    operation_name: ClassVar[str] = "operation"
    feature_category: ClassVar[str] = "unknown"
    cursor: ClassVar[tuple[str, ...] | None] = None
    database: ClassVar[str] = "main"
    model: ClassVar[Any] = None
    tables: ClassVar[tuple[str, ...] | None] = None
    #: ``tables`` as (schema or None, name) pairs, set at class creation
    _declared_tables: ClassVar[tuple[tuple[str | None, str], ...] | None] = None

    batch_size: ClassVar[int | None] = None
    sub_batch_size: ClassVar[int | None] = None
    pause_ms: ClassVar[int | None] = None
    interval_seconds: ClassVar[float | None] = None
    min_batch_size: ClassVar[int | None] = None
    max_batch_size: ClassVar[int | None] = None
    priority: ClassVar[int | None] = None

    #: set by the framework before ``perform`` (or ``process``) runs
    table: Any
    arguments: Any
    operation: OperationRecord
    job: JobRecord

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        check_class(cls, BaseOperation)
        register(cls)

    def __init__(self, arguments: Any = None, *, table: Any = None) -> None:
        self.arguments = {} if arguments is None else arguments
        self.table = table
        # Filled by the batching engine while a job runs.
        self._engine: Any = None
        # The current sub-batch's reported outcomes (dramatiq_bbo.tracking.outcomes).
        self._outcomes: Any = None

    # -- what the author overrides -----------------------------------------------------------
    def scope(self, query: Any) -> Any:
        """Narrow the walk (``query.where(...)``); the narrowing must be indexed."""
        return query

    def process(self, sub_batch: SubBatch) -> None:
        """Change one sub-batch (``sub_batch.where(...).delete()``...); called once per
        sub-batch of the job's range, each in its own short transaction.

        Returning commits the sub-batch together with the job's checkpoint; raising rolls it
        back and fails the job, which is retried from its checkpoint.
        """
        raise NotImplementedError(f"{type(self).__name__}.process() is not implemented")

    def perform(self) -> None:
        """Walk the current job's range. By default: :meth:`process` for each sub-batch.

        Override it instead of ``process`` to own the loop:
        ``for sub_batch in self.each_sub_batch(): ...``. Stop checks (pause, cancel, lease
        lost, health) and pacing run between sub-batches either way, inside the walk.
        """
        for sub_batch in self.each_sub_batch():
            self.process(sub_batch)

    # -- what the author calls -----------------------------------------------------------------
    def each_sub_batch(self) -> Iterator[SubBatch]:
        """Yield the current job's sub-batches, each inside its own short transaction.

        Leaving the loop body normally commits the sub-batch together with the job's
        checkpoint; an exception (or ``break``) rolls the current sub-batch back.
        """
        if self._engine is None:
            raise OperationDefinitionError(
                f"{type(self).__name__}.each_sub_batch() can only be called while a job runs "
                "(from perform(), driven by run_to_completion() or a worker); with process(), "
                "the framework walks the sub-batches for you"
            )
        walk: Iterator[SubBatch] = self._engine.iterate()
        for wrapper in _walk_wrappers:
            walk = wrapper(self, walk)
        return walk

    # -- per-item outcomes of a tracked bulk operation (dramatiq_bbo.tracking) --------------------
    def track_success(self, n: int = 1) -> None:
        """Count ``n`` items of the current sub-batch as successful in the tracked operation
        of the ``tracked_operation_id`` argument; written in the sub-batch's transaction, so
        a rolled-back (and retried) sub-batch counts nothing."""
        self._current_outcomes("track_success").success(n)

    def track_failure(self, **item: Any) -> None:
        """Record a failed item of the current sub-batch (``entity_id``, ``entity_type``,
        ``entity_name``, ``entity_full_path``, ``error_message``, ``error_code``), written
        like :meth:`track_success`."""
        self._current_outcomes("track_failure").failure(**item)

    def _current_outcomes(self, caller: str) -> Any:
        outcomes = getattr(self, "_outcomes", None)
        if outcomes is None:
            raise OperationDefinitionError(
                f"{type(self).__name__}.{caller}() can only be called inside a sub-batch "
                "(in process(), or in the loop over each_sub_batch() in perform()), in a "
                "process that imported dramatiq_bbo.tracking (bbo.setup() does)"
            )
        return outcomes

    @classmethod
    def cursor_columns(cls, column_name: str) -> tuple[str, ...]:
        """The keyset columns for an operation batching on ``column_name``."""
        return tuple(cls.cursor) if cls.cursor else (column_name,)


def register(cls: type[BaseOperation], name: str | None = None) -> type[BaseOperation]:
    """Register ``cls`` under ``name`` (default ``cls.name``). Usable as a decorator too.

    Redefining the same class (same module and qualified name, e.g. on reload) replaces it;
    a *different* class under a taken name is refused.
    """
    key = name or cls.name
    with _registry_lock:
        existing = _registry.get(key)
        if (
            existing is not None
            and existing is not cls
            and (
                existing.__module__,
                existing.__qualname__,
            )
            != (cls.__module__, cls.__qualname__)
        ):
            raise OperationDefinitionError(
                f"operation name {key!r} is already used by "
                f"{existing.__module__}.{existing.__qualname__}; set a distinct `name`"
            )
        _registry[key] = cls
    return cls


def unregister(name: str) -> None:
    """Forget a registered class (tests define throw-away classes)."""
    with _registry_lock:
        _registry.pop(name, None)


def resolve(class_or_name: type[BaseOperation] | str) -> type[BaseOperation]:
    """The registered class for a class or a name; unknown → UnknownOperationClass."""
    if isinstance(class_or_name, type):
        if not issubclass(class_or_name, BaseOperation):
            raise UnknownOperationClass(
                f"{class_or_name.__qualname__} is not a subclass of dramatiq_bbo.BaseOperation"
            )
        return class_or_name
    if not isinstance(class_or_name, str):
        raise UnknownOperationClass(
            f"expected an operation class or its registered name, got {class_or_name!r}"
        )
    try:
        return _registry[class_or_name]
    except KeyError:
        known = ", ".join(sorted(_registry)) or "none"
        raise UnknownOperationClass(
            f"no operation class is registered as {class_or_name!r} (registered: {known}); "
            "import the module that defines it before enqueueing or running"
        ) from None


def own_scope(operation: BaseOperation) -> Callable[[Any], Any] | None:
    """The instance's ``scope`` when its class overrides it, else None: the default scope
    narrows nothing, and a walk without one needs no scope check or extra condition."""
    return operation.scope if type(operation).scope is not BaseOperation.scope else None


def registered() -> dict[str, type[BaseOperation]]:
    with _registry_lock:
        return dict(_registry)
