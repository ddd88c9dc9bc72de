"""The current organization: who an ``enqueue()`` acts for when the call does not say.

A web application knows, per request, the organization and the user it serves; passing them
to every ``enqueue`` call down the stack is noise, and forgetting them silently makes an
organization's operation cell-local. ``with bbo.current_organization(organization_id,
user_id):`` sets them once (a request middleware does it), and ``enqueue`` takes them when
the call names no scope of its own (``organization_id=``, ``user_id=``, ``user=``): explicit
arguments always win, whole — a call giving only one half is refused, never completed from the
context.

It is a :mod:`contextvars` variable, so it follows the code that set it and nothing else: each
thread starts without one, an asyncio task sees the value of the task that created it (and
its own changes stay its own), and leaving the ``with`` block restores the value before it,
so blocks nest. ``current_organization(None, None)`` sets "no organization" for a block (work
started from a request that is the cell's own). A half-given pair is refused when the block
is entered, so the context never holds one.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, NamedTuple

from ..errors import InvalidScope

_BIGINT = range(-(2**63), 2**63)


class Organization(NamedTuple):
    """An organization and the user acting in it, as the context holds them."""

    organization_id: int
    user_id: int


_CURRENT: contextvars.ContextVar[Organization | None] = contextvars.ContextVar(
    "dramatiq_bbo_current_organization", default=None
)


@contextlib.contextmanager
def current_organization(organization_id: int | None, user_id: int | None) -> Iterator[None]:
    """Within the block, ``enqueue`` calls that name no scope act for ``organization_id`` and
    ``user_id`` (both ints, or both None for "no organization"). Raises
    :class:`~dramatiq_bbo.errors.InvalidScope` for a half-given pair or a value that is not a
    bigint, before anything changes."""
    value = _checked(organization_id, user_id)
    token = _CURRENT.set(value)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def organization_in_context() -> Organization | None:
    """The organization set by the innermost enclosing :func:`current_organization`, if any."""
    return _CURRENT.get()


def scope_arguments(organization_id: Any, user_id: Any, user: Any) -> tuple[Any, Any, Any]:
    """``enqueue``'s scope arguments with the context applied: as given when the call names
    any of them (explicit wins, and a half is then refused by the checks), else the current
    organization's pair (or none)."""
    if organization_id is not None or user_id is not None or user is not None:
        return organization_id, user_id, user
    context = _CURRENT.get()
    if context is None:
        return None, None, None
    return context.organization_id, context.user_id, None


def _checked(organization_id: Any, user_id: Any) -> Organization | None:
    if organization_id is None and user_id is None:
        return None
    if organization_id is None or user_id is None:
        raise InvalidScope(
            "current_organization() needs both organization_id and user_id (or neither, for "
            f"no organization), got organization_id={organization_id!r}, user_id={user_id!r}"
        )
    for name, value in (("organization_id", organization_id), ("user_id", user_id)):
        if isinstance(value, bool) or not isinstance(value, int) or value not in _BIGINT:
            raise InvalidScope(
                f"current_organization(): {name} must be an int (bigint range), got {value!r}"
            )
    return Organization(organization_id, user_id)
