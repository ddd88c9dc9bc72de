"""Indicator ``prometheus``: a service-level indicator compared with its objective.

Asks a Prometheus server's HTTP API (``GET {prometheus_url}/api/v1/query?query=...``) for
``prometheus_query`` and compares the answer with ``prometheus_slo``: with
``prometheus_stop_when = "above"`` (the default; latencies, error rates) it stops when the
SLI exceeds the SLO, with ``"below"`` (apdex, availability) when it falls under it. Of
several series the worst counts. Off unless ``prometheus_url`` is set.

An unreachable server, an HTTP error or a malformed answer is ``UNKNOWN``; a query that
returns no sample (or NaN) is ``NOT_AVAILABLE``. Answers are cached 5 s by default
(``cache_seconds={"prometheus": ...}``): Prometheus scrapes every 15 s or so anyway.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .base import Context, Result, Signal


class PrometheusQuery:
    name = "prometheus"
    cache_seconds = 5.0
    per_table = False

    def check(self, context: Context) -> Result:
        settings = context.settings
        base = str(settings["prometheus_url"]).rstrip("/")
        promql = str(settings["prometheus_query"])
        url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        # a little under the evaluator's deadline, so a slow server is reported as such
        timeout = 0.8 * float(settings["indicator_timeout_seconds"])
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                payload = json.load(response)
        except urllib.error.HTTPError as exc:
            return self._unknown(f"Prometheus answered HTTP {exc.code}: {_error_of(exc)}")
        except (OSError, ValueError) as exc:  # URLError, refused, timeout, bad JSON
            return self._unknown(f"cannot query Prometheus at {base}: {exc}")
        try:
            values = _values(payload)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            return self._unknown(f"unexpected answer from Prometheus ({exc!r}): {payload!r:.200}")
        if not values:
            return Result(self.name, Signal.NOT_AVAILABLE, f"query {promql!r} returned no sample")
        slo = float(settings["prometheus_slo"])
        above = settings["prometheus_stop_when"] == "above"
        sli = max(values) if above else min(values)
        breached = sli > slo if above else sli < slo
        relation = settings["prometheus_stop_when"] if breached else "within"
        reason = f"SLI {sli:g} {relation} SLO {slo:g} ({promql})"
        return Result(self.name, Signal.STOP if breached else Signal.NORMAL, reason)

    def _unknown(self, reason: str) -> Result:
        return Result(self.name, Signal.UNKNOWN, reason)


def _values(payload: dict[str, Any]) -> list[float]:
    """The numbers of an instant query's answer (vector or scalar), NaNs left out."""
    if payload.get("status") != "success":
        raise ValueError(f"status {payload.get('status')!r}, error {payload.get('error')!r}")
    data = payload["data"]
    kind, result = data["resultType"], data["result"]
    if kind == "vector":
        samples = [float(series["value"][1]) for series in result]
    elif kind == "scalar":
        samples = [float(result[1])]
    else:
        raise ValueError(f"resultType {kind!r}: the query must give an instant vector or scalar")
    return [v for v in samples if not math.isnan(v)]


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        return str(body.get("error") or exc.reason)
    except ValueError:
        return str(exc.reason)
