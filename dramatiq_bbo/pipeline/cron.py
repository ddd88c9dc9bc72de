"""Cron expressions for periodiq, validated and rewritten so that Sundays fire.

periodiq 0.14 silently never fires on Sunday when the expression names Sunday as ``0``,
``sun`` or through ``@weekly``. Read from its source (``periodiq/__init__.py``):

* ``CronSpec.parse`` turns ``sun``..``sat`` into ``0``..``6``, expands ``@weekly`` to
  ``0 0 * * 0`` and accepts day-of-week values 0..7.
* ``CronSpec.validate`` — the check ``Scheduler.schedule`` makes at every wake-up to decide
  whether to send the actor — compares ``date.isoweekday()`` with that set. ``isoweekday()``
  is Monday=1 .. **Sunday=7**, so a ``0`` never matches: ``0 0 * * 0``, ``sun`` and
  ``@weekly`` never fire, ``0,3`` fires on Wednesdays only, ``0-2`` on Monday and Tuesday
  only. Even ``0-6`` (every day, spelled out) loses its Sundays.
* ``CronSpec.next_valid_date`` — which decides how long the scheduler sleeps — counts the
  other way, ``isoweekday() % 7`` (Sunday=0), and pads the set with ``7 + dow[0]``. So writing
  Sunday as ``7`` alone satisfies ``validate`` but breaks the sleep: when the candidate day is
  a Sunday, the first value >= 0 in ``[7, 14]`` is 7 and the next date jumps a week ahead.
  A scheduler that wakes on a Saturday (started then, or woken by another actor) sleeps
  through that Sunday's run.

The rewrite therefore writes Sunday as **both** ``0`` and ``7``: ``validate`` finds 7,
``next_valid_date`` finds 0. The one wrinkle is that periodiq decides whether day-of-week is
restricted by counting values (fewer than 7); Sunday plus five other days counts 7 values
once Sunday is doubled. With day-of-month ``*`` that is harmless (periodiq then requires the
weekday to be in the set, which is right, and merely wakes up early on the other days); with
a restricted day-of-month it would turn cron's "day-of-month OR day-of-week" into AND, so
:func:`normalize_cron` refuses that rare combination rather than change its meaning.

Validation is ours too, because periodiq's own parser accepts ``61 * * * *`` (never fires),
treats ``5/15`` as ``5`` and fails with bare ``ValueError``/``IndexError``/``KeyError`` on
other mistakes. Every refusal is a :class:`~dramatiq_bbo.errors.InvalidCronExpression`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from periodiq import CronSpec, cron

from ..errors import InvalidCronExpression

__all__ = ["cron_spec", "normalize_cron"]

#: periodiq's macros, plus nothing else (``@reboot`` has no meaning for a scheduler loop).
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_ITEM = re.compile(r"^(?:(\*)|(\d+)(?:-(\d+))?)(?:/(\d+))?$")


@dataclass(frozen=True)
class _Field:
    label: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name_value: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day of week", 0, 7, _DAYS, 0),
)


def normalize_cron(expression: str) -> str:
    """Validate a 5-field cron expression and rewrite it into one periodiq runs correctly.

    Accepts numbers, ``*``, ranges, lists, steps (``*/5``, ``1-10/2``), month and weekday
    names (``jan``, ``sun``) and periodiq's macros (``@hourly`` ... ``@weekly``). The result
    is numeric, lower-case and means the same thing; day-of-week is rewritten as described in
    the module docstring so Sunday fires. Raises :class:`InvalidCronExpression` with the
    reason otherwise.
    """
    if not isinstance(expression, str):
        raise InvalidCronExpression(f"cron expression must be a string, got {expression!r}")
    text = expression.strip().lower()
    if text.startswith("@"):
        if text not in MACROS:
            raise _invalid(expression, f"unknown macro {text!r}; known: {', '.join(MACROS)}")
        text = MACROS[text]
    parts = text.split()
    if len(parts) != 5:
        raise _invalid(
            expression,
            f"expected 5 fields 'minute hour day-of-month month day-of-week' "
            f"(e.g. '0 3 * * sun') or a macro such as '@daily', got {len(parts)} fields",
        )
    fields = [_canonical(expression, part, spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    days = {value % 7 for value in _values(expression, parts[4], _FIELDS[4])}
    day_of_month_restricted = len(_values(expression, parts[2], _FIELDS[2])) < 31
    fields[4] = _day_of_week(expression, days, day_of_month_restricted)
    normalized = " ".join(fields)
    try:  # our parser is stricter than periodiq's; this only guards against a drift
        CronSpec.parse(normalized)
    except Exception as exc:  # periodiq raises bare ValueError, IndexError, KeyError
        raise _invalid(expression, f"periodiq refuses {normalized!r}: {exc!r}") from None
    return normalized


def cron_spec(expression: str) -> CronSpec:
    """periodiq's ``CronSpec`` for ``expression``, normalised: use it as ``periodic=``."""
    return cron(normalize_cron(expression))


# -- parsing -------------------------------------------------------------------------------------


def _invalid(expression: object, reason: str) -> InvalidCronExpression:
    return InvalidCronExpression(f"invalid cron expression {expression!r}: {reason}")


def _items(expression: str, text: str, spec: _Field) -> list[tuple[int, int, int, bool]]:
    """The field's comma items as (start, end, step, was_star), with names resolved."""
    items = []
    for item in text.split(","):
        named = _resolve_names(expression, item, spec)
        match = _ITEM.match(named)
        if match is None:
            raise _invalid(expression, f"{spec.label} item {item!r} is not N, N-M, * or .../S")
        star, start_text, end_text, step_text = match.groups()
        if star:
            start, end = spec.low, spec.high
        else:
            start = int(start_text)
            end = int(end_text) if end_text is not None else start
            if step_text is not None and end_text is None:
                raise _invalid(
                    expression,
                    f"{spec.label} item {item!r} is ambiguous (cron dialects disagree); "
                    f"write the range, e.g. '{start}-{spec.high}/{step_text}'",
                )
        step = int(step_text) if step_text is not None else 1
        if not spec.low <= start <= end <= spec.high:
            raise _invalid(
                expression,
                f"{spec.label} item {item!r} is outside {spec.low}-{spec.high} or reversed",
            )
        if step < 1:
            raise _invalid(expression, f"{spec.label} step in {item!r} must be at least 1")
        items.append((start, end, step, bool(star)))
    return items


def _resolve_names(expression: str, item: str, spec: _Field) -> str:
    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        if word not in spec.names:
            allowed = ", ".join(spec.names) if spec.names else "none"
            raise _invalid(expression, f"unknown {spec.label} name {word!r} (allowed: {allowed})")
        return str(spec.names.index(word) + spec.first_name_value)

    return re.sub(r"[a-z]+", replace, item)


def _values(expression: str, text: str, spec: _Field) -> set[int]:
    values: set[int] = set()
    for start, end, step, _ in _items(expression, text, spec):
        values.update(range(start, end + 1, step))
    return values


def _canonical(expression: str, text: str, spec: _Field) -> str:
    """The field written with numbers only, item by item (periodiq expands it identically)."""
    rendered = []
    for start, end, step, star in _items(expression, text, spec):
        body = "*" if star else (str(start) if start == end else f"{start}-{end}")
        rendered.append(body if step == 1 else f"{body}/{step}")
    return ",".join(rendered)


def _day_of_week(expression: str, days: set[int], day_of_month_restricted: bool) -> str:
    """Day-of-week for periodiq: ``*`` for every day, else Sunday written as both 0 and 7."""
    if len(days) == 7:
        return "*"
    if 0 not in days:
        return _ranges(sorted(days))
    if len(days) == 6 and day_of_month_restricted:
        raise _invalid(
            expression,
            "periodiq 0.14 cannot run Sunday plus five other weekdays together with a "
            "restricted day-of-month (it would require both instead of either); "
            "split it into two periodic actors",
        )
    return _ranges(sorted(days | {7}))


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5, 7]`` → ``0-2,5,7``."""
    groups: list[list[int]] = []
    for value in values:
        if groups and value == groups[-1][-1] + 1:
            groups[-1].append(value)
        else:
            groups.append([value])
    return ",".join(str(g[0]) if len(g) == 1 else f"{g[0]}-{g[-1]}" for g in groups)
