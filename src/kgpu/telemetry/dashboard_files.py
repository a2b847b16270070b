"""The Grafana dashboards shipped in `dashboards/`, and the metrics their queries read."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD_DIR = Path(__file__).parent / "dashboards"
# kgpu's own metrics and the DCGM exporter's; PromQL functions and labels never match these prefixes.
_METRIC = re.compile(r"\b(kgpu_[A-Za-z0-9_]+|DCGM_[A-Za-z0-9_]+)\b")


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for panel in dashboard.get("panels", []) for t in panel.get("targets", [])]
    exprs += [v["query"] for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "query"]
    return exprs


def referenced_metrics(dashboard: dict) -> set[str]:
    return {name for expr in queries(dashboard) for name in _METRIC.findall(expr)}
