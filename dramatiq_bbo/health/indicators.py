"""Which indicators exist and which run: the built-in registry and the registered callables.

``BUILTIN_INDICATORS`` maps an indicator's name to ``"module:factory"``; the factory is
called without arguments, once per process, and returns an object following the
:class:`~dramatiq_bbo.health.base.Indicator` protocol (its thresholds it reads from
``context.settings`` at each check). A new built-in plugs in with one line here. Modules are
imported lazily; one that does not exist (yet) is skipped, one that fails to import is
logged once and skipped — a broken indicator never stops the pipeline.

Built-ins run by default except ``prometheus``, which needs ``prometheus_url``; any
indicator is switched off with ``health={"disabled_indicators": ["name", ...]}``.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable, Mapping
from typing import Any, overload

from ..errors import ConfigurationError
from ..logs import logger
from .base import Indicator
from .user import UserCallable, UserIndicator, default_name

BUILTIN_INDICATORS: dict[str, str] = {
    "long_transaction": "dramatiq_bbo.health.long_transaction:LongTransaction",
    "saturation": "dramatiq_bbo.health.saturation:ConnectionSaturation",
    "autovacuum": "dramatiq_bbo.health.autovacuum:Autovacuum",
    "wal_archive": "dramatiq_bbo.health.archive:ArchiveBacklog",
    "wal_rate": "dramatiq_bbo.health.wal_rate:WalRate",
    "replication_lag": "dramatiq_bbo.health.replication:ReplicationLag",
    "prometheus": "dramatiq_bbo.health.prometheus:PrometheusQuery",
}

_lock = threading.Lock()
_builtins: dict[str, Indicator | None] = {}
_users: dict[str, UserIndicator] = {}


def builtin(name: str) -> Indicator | None:
    """The built-in indicator ``name`` (made once), or None when its module is missing."""
    with _lock:
        if name in _builtins:
            return _builtins[name]
    indicator = _load(name, BUILTIN_INDICATORS[name])
    with _lock:
        return _builtins.setdefault(name, indicator)


def _load(name: str, target: str) -> Indicator | None:
    module_name, _, attribute = target.partition(":")
    try:
        if importlib.util.find_spec(module_name) is None:
            logger.debug("health indicator %s not installed (no module %s)", name, module_name)
            return None
        factory = getattr(importlib.import_module(module_name), attribute)
        indicator = factory()
    except Exception:
        logger.exception("health indicator %s (%s) could not be loaded; skipped", name, target)
        return None
    if not isinstance(indicator, Indicator):
        logger.error("health indicator %s (%s) lacks name/cache_seconds/check", name, target)
        return None
    return indicator


@overload
def register(
    fn: UserCallable,
    *,
    name: str | None = None,
    cache_seconds: float = 0.0,
    timeout_seconds: float | None = None,
) -> UserCallable: ...
@overload
def register(
    fn: None = None,
    *,
    name: str | None = None,
    cache_seconds: float = 0.0,
    timeout_seconds: float | None = None,
) -> Callable[[UserCallable], UserCallable]: ...
def register(
    fn: UserCallable | None = None,
    *,
    name: str | None = None,
    cache_seconds: float = 0.0,
    timeout_seconds: float | None = None,
) -> Any:
    """Add a user indicator ``fn(context) -> Signal | (Signal, reason)``; usable as a
    decorator, with or without arguments. ``name`` (default: the callable's qualified name)
    appears in logs and hold reasons; registering a name again replaces it. Answers are
    reused for ``cache_seconds`` (default 0: asked before every sub-batch); the callable
    gets ``timeout_seconds`` (default: the ``indicator_timeout_seconds`` setting)."""
    if fn is None:
        return lambda f: register(
            f, name=name, cache_seconds=cache_seconds, timeout_seconds=timeout_seconds
        )
    if not callable(fn):
        raise ConfigurationError(f"health.register() needs a callable, got {fn!r}")
    key = name or default_name(fn)
    if key in BUILTIN_INDICATORS:
        raise ConfigurationError(
            f"health indicator name {key!r} is a built-in's; pick another name= "
            f"(built-ins: {', '.join(sorted(BUILTIN_INDICATORS))})"
        )
    for value, label in ((cache_seconds, "cache_seconds"), (timeout_seconds, "timeout_seconds")):
        if value is not None and (isinstance(value, bool) or not value >= 0):
            raise ConfigurationError(f"health.register(): {label} must be >= 0, got {value!r}")
    indicator = UserIndicator(
        fn, name=key, cache_seconds=cache_seconds, timeout_seconds=timeout_seconds
    )
    with _lock:
        _users[key] = indicator
    return fn


def unregister(fn_or_name: UserCallable | str) -> None:
    """Remove a user indicator, by name or by the callable registered (no-op if absent)."""
    with _lock:
        for key, indicator in list(_users.items()):
            if key == fn_or_name or indicator.fn is fn_or_name:
                del _users[key]


def registered() -> list[UserIndicator]:
    with _lock:
        return list(_users.values())


def configured(settings: Mapping[str, Any]) -> list[Indicator]:
    """The indicators that run under ``settings``: built-ins first, then user callables."""
    disabled = set(settings["disabled_indicators"])
    chosen: list[Indicator] = []
    for name in BUILTIN_INDICATORS:
        if name in disabled or (name == "prometheus" and not settings["prometheus_url"]):
            continue
        indicator = builtin(name)
        if indicator is not None:
            chosen.append(indicator)
    chosen.extend(u for u in registered() if u.name not in disabled)
    return chosen
