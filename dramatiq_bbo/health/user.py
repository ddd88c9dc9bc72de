"""User indicators: any callable ``fn(context)`` registered with ``health.register(fn)``.

The callable gets a :class:`~dramatiq_bbo.health.base.Context` (``.operation`` as
``bbo.get_operation`` returns it, ``.connection`` to the operation's database) and returns
a :class:`Signal` or a ``(Signal, reason)`` tuple (a full :class:`Result` is accepted too).
Anything else counts as ``UNKNOWN``, with what it returned as the reason. Register it in the
application module, so every worker process has it.

User answers are not cached unless the callable asks (``cache_seconds=``): the application
knows whether its question is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Context, Result, Signal

UserCallable = Callable[[Context], Any]


class UserIndicator:
    """Adapts a user callable to the :class:`~dramatiq_bbo.health.base.Indicator` protocol."""

    per_table = True

    def __init__(
        self,
        fn: UserCallable,
        *,
        name: str,
        cache_seconds: float = 0.0,
        timeout_seconds: float | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.cache_seconds = float(cache_seconds)
        self.timeout_seconds = None if timeout_seconds is None else float(timeout_seconds)

    def check(self, context: Context) -> Result:
        return as_result(self.name, self.fn(context))

    def __repr__(self) -> str:
        return f"UserIndicator({self.name!r})"


def as_result(name: str, value: Any) -> Result:
    """What a user callable returned, as a Result of indicator ``name``."""
    if isinstance(value, Result):
        return value if value.indicator == name else Result(name, value.signal, value.reason)
    if isinstance(value, Signal):
        return Result(name, value)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], Signal)
        and isinstance(value[1], str)
    ):
        return Result(name, value[0], value[1])
    return Result(
        name,
        Signal.UNKNOWN,
        f"returned {value!r:.200}; expected a health.Signal or a (Signal, reason) tuple",
    )


def default_name(fn: UserCallable) -> str:
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}" if module and module != "__main__" else qualname
