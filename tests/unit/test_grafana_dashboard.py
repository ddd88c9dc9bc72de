"""examples/grafana/dramatiq-bbo-dashboard.json is built on the library's metrics: every
series it queries is one dramatiq_bbo.metrics records, with the labels it records, and
every metric the library records is on the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "examples" / "grafana" / "dramatiq-bbo-dashboard.json"
_SERIES = re.compile(r"\b(background_operation_[a-z_]+)")
_HISTOGRAM_PARTS = ("_bucket", "_count", "_sum")


def library_metrics() -> set[str]:
    """The metric names dramatiq_bbo/metrics.py declares (read from its source, so that
    prometheus_client's registry is left untouched)."""
    source = (ROOT / "dramatiq_bbo" / "metrics.py").read_text(encoding="utf-8")
    return {f"background_operation_{name}" for name in re.findall(r'f"\{prefix\}(\w+)"', source)}


def expressions(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
        return found + [e for v in node.values() for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


def queried(dashboard: dict[str, object], metrics: set[str]) -> set[str]:
    """The metrics the dashboard's queries read (a histogram's ``_bucket``, ``_sum`` and
    ``_count`` series read the histogram); a name matching none is kept as it is."""
    names = set()
    for expr in expressions(dashboard):
        for name in _SERIES.findall(expr):
            if name not in metrics:
                for part in _HISTOGRAM_PARTS:
                    if name.removesuffix(part) in metrics:
                        name = name.removesuffix(part)
            names.add(name)
    return names


def test_the_dashboard_queries_exactly_the_library_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    metrics = library_metrics()
    assert len(metrics) >= 9
    assert queried(dashboard, metrics) == metrics


def test_the_dashboard_uses_the_recorded_labels_and_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    text = json.dumps(dashboard)
    labels = set(re.findall(r"by \(([^)]*)\)", text))
    used = {label.strip() for group in labels for label in group.split(",")}
    assert used <= {"le", "migration_identifier", "migration_id", "outcome", "indicator"}
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "identifier"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
