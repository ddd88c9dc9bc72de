"""The checks an operation class passes when it is defined, before it is registered.

A malformed class fails at import, with an :class:`~dramatiq_bbo.errors.OperationDefinitionError`
naming the class and what to change, instead of failing later in a worker (or never: a class
attribute with a wrong name is otherwise silently ignored, and the setting it meant to change
keeps its default — ``interval = 0`` would leave the job waiting ``interval_seconds``' default).

What a class may set is read from the base class itself (its ``ClassVar`` annotations and its
methods), so an attribute added to ``BaseOperation`` is known here without a second list. The
checks take the base class as an argument rather than importing it: this module is imported by
:mod:`dramatiq_bbo.operation`, not the other way round.
"""

from __future__ import annotations

import difflib
import inspect
import re
from typing import Any

from .enqueueing.table_policy import declared_tables
from .errors import OperationDefinitionError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:]{0,254}$")
_SIZES = ("batch_size", "sub_batch_size", "min_batch_size", "max_batch_size")

#: names authors reach for that difflib finds too far from the real one
ALIASES = {
    "interval": "interval_seconds",
    "interval_s": "interval_seconds",
    "interval_ms": "interval_seconds",
    "pause": "pause_ms",
    "pause_seconds": "pause_ms",
    "batch": "batch_size",
    "sub_batch": "sub_batch_size",
    "min_batch": "min_batch_size",
    "max_batch": "max_batch_size",
}
#: how close (difflib ratio) an unknown name must be to a known one to be taken for a typo,
#: besides being within a few edits of it (see :func:`_looks_like`)
CLOSENESS = 0.85


def check_class(cls: Any, base: Any) -> None:
    """Every definition check on ``cls``, a subclass of ``base`` (``BaseOperation``)."""
    _check_spelling(cls, base)
    _check_name(cls)
    _check_cursor(cls)
    _check_sizes(cls)
    _check_priority(cls)
    _check_tables(cls)
    _check_entry_point(cls, base)


# -- the attributes' values ---------------------------------------------------------------------
def _check_name(cls: Any) -> None:
    if not isinstance(cls.name, str) or not _NAME.match(cls.name):
        raise OperationDefinitionError(
            f"{cls.__qualname__}: name must be 1..255 letters, digits, '_', '.', ':' "
            f"and not start with a digit, got {cls.name!r}"
        )


def _check_cursor(cls: Any) -> None:
    if cls.cursor is None:
        return
    if isinstance(cls.cursor, str):
        raise OperationDefinitionError(
            f"{cls.__qualname__}: cursor must be a tuple of column names, e.g. "
            f"({cls.cursor!r},), got the string {cls.cursor!r}"
        )
    columns = tuple(cls.cursor)
    if not 1 <= len(columns) <= 8:
        raise OperationDefinitionError(
            f"{cls.__qualname__}: cursor needs 1..8 columns, got {columns!r}"
        )
    for column in columns:
        if not isinstance(column, str) or not _IDENTIFIER.match(column):
            raise OperationDefinitionError(
                f"{cls.__qualname__}: cursor column {column!r} is not a valid identifier"
            )
    if len(set(columns)) != len(columns):
        raise OperationDefinitionError(f"{cls.__qualname__}: cursor repeats a column: {columns!r}")
    cls.cursor = columns


def _check_sizes(cls: Any) -> None:
    for attribute in _SIZES:
        value = getattr(cls, attribute)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise OperationDefinitionError(
                f"{cls.__qualname__}: {attribute} must be an int, got {value!r}"
            )


def _check_priority(cls: Any) -> None:
    value = cls.priority
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not -32768 <= value <= 32767:
        raise OperationDefinitionError(
            f"{cls.__qualname__}: priority must be an int in -32768..32767, got {value!r}"
        )


def _check_tables(cls: Any) -> None:
    if "tables" not in cls.__dict__:
        return
    if cls.tables is None:
        cls._declared_tables = None
    else:
        cls._declared_tables = declared_tables(cls.__qualname__, cls.tables)
        cls.tables = tuple(cls.tables)


# -- the entry point: perform() or process() ---------------------------------------------------
def _check_entry_point(cls: Any, base: Any) -> None:
    """Exactly one of ``process`` (the framework owns the loop) and ``perform`` (the author
    does): with both, perform() would run and process() never would, silently."""
    perform, process = cls.perform, cls.process
    has_perform = perform is not base.perform
    has_process = process is not base.process
    if has_perform and has_process:
        raise OperationDefinitionError(
            f"{cls.__qualname__} defines both process() ({process.__qualname__}) and perform() "
            f"({perform.__qualname__}); define one: process(self, sub_batch) to have the "
            "framework walk the sub-batches, or perform(self) to write the "
            "`for sub_batch in self.each_sub_batch()` loop yourself (perform() would run and "
            "process() never would)"
        )
    if not (has_perform or has_process):
        raise OperationDefinitionError(
            f"{cls.__qualname__} must define process(self, sub_batch), called once per "
            "sub-batch, or perform(self), which walks self.each_sub_batch() itself"
        )
    name, hook, arguments, shape = (
        ("process", process, (None, None), "process(self, sub_batch)")
        if has_process
        else ("perform", perform, (None,), "perform(self)")
    )
    try:
        signature = inspect.signature(hook)
    except (TypeError, ValueError):  # no signature to read (a builtin): let the call decide
        return
    try:
        signature.bind(*arguments)
    except TypeError:
        raise OperationDefinitionError(
            f"{cls.__qualname__}.{name}{signature} cannot be called as {shape}"
        ) from None


# -- the attributes' names -----------------------------------------------------------------------
def _check_spelling(cls: Any, base: type) -> None:
    """An unknown public name close to one ``base`` knows is taken for a typo of it.

    A name far from every known one (the author's own helper) is fine, and so is a name that
    extends a known one (``processed``, ``scope_for``; a plural such as ``batch_sizes`` is
    still a typo): typos drop, swap, double or change a letter or two. Methods are compared
    with methods, other attributes with other attributes. Checked on the class's own namespace
    and on mixins outside the ``base`` hierarchy (a parent operation class was checked when it
    was defined).
    """
    known = _public_names(base)
    methods, attributes = _suggestions(base)
    for owner in cls.__mro__:
        if owner is not cls and (issubclass(owner, base) or owner is object):
            continue
        for name, value in vars(owner).items():
            if name.startswith("_") or name in known:
                continue
            candidates = methods if _is_method(value) else attributes
            right = _closest(name, candidates)
            if right is not None:
                raise OperationDefinitionError(
                    f"{cls.__qualname__}: {name!r} is not an operation class attribute; did "
                    f"you mean {right!r}? (a misspelt attribute would be silently ignored). "
                    f"If {name!r} is your own, give it a name not so close to {right!r}, "
                    f"e.g. '_{name}'"
                )


def _closest(name: str, candidates: frozenset[str]) -> str | None:
    """The known name ``name`` looks like a typo of, or None."""
    alias = ALIASES.get(name)
    if alias is not None and alias in candidates:
        return alias
    matches = [candidate for candidate in candidates if _looks_like(name, candidate)]
    if not matches:
        return None
    return min(matches, key=lambda c: (_distance(name, c), -_ratio(name, c), c))


def _looks_like(name: str, known: str) -> bool:
    folded, target = name.lower().replace("_", ""), known.replace("_", "")
    if folded in (target, target + "s"):
        return True  # BatchSize, subbatch_size, batch_sizes
    if name.startswith(known):
        return False  # an extension of a known name (processed, scope_for) is deliberate
    # at most one edit for a short name, two for a long one; none for ``name``, which is
    # one letter away from too many words
    edits = 0 if len(known) <= 4 else 1 if len(known) <= 8 else 2
    return _ratio(name, known) >= CLOSENESS or _distance(name, known) <= edits


def _ratio(name: str, known: str) -> float:
    return difflib.SequenceMatcher(None, name, known).ratio()


def _distance(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) turning ``a`` into ``b``."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            current[j] = min(
                previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1])
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def _public_names(base: type) -> frozenset[str]:
    """Every public name ``base`` and its bases define or annotate: a class may override
    any of them (``table``, ``each_sub_batch``...) without it being taken for a typo."""
    names: set[str] = set()
    for klass in base.__mro__:
        if klass is object:
            continue
        names.update(vars(klass))
        names.update(inspect.get_annotations(klass))
    return frozenset(name for name in names if not name.startswith("_"))


def _suggestions(base: type) -> tuple[frozenset[str], frozenset[str]]:
    """What a typo may have meant: ``base``'s methods, and its ``ClassVar`` attributes (the
    settings a class sets; ``table``, ``job``... are set on the instance by the framework)."""
    methods: set[str] = set()
    attributes: set[str] = set()
    for klass in base.__mro__:
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and _is_method(value):
                methods.add(name)
        for name, annotation in inspect.get_annotations(klass).items():
            if not name.startswith("_") and _is_class_var(annotation):
                attributes.add(name)
    return frozenset(methods), frozenset(attributes)


def _is_method(value: Any) -> bool:
    return inspect.isfunction(value) or isinstance(value, classmethod | staticmethod)


def _is_class_var(annotation: Any) -> bool:
    """``ClassVar[...]``, as a string (postponed annotations) or as the typing object."""
    return str(annotation).split("[", 1)[0].rsplit(".", 1)[-1] == "ClassVar"
