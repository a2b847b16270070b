from __future__ import annotations

from kgpu.telemetry.dashboard_files import dashboards, queries, referenced_metrics
from kgpu.telemetry.gpu_exporter import GPU_METRIC_NAMES


def test_dashboards_load_with_unique_ids_and_queries() -> None:
    loaded = dashboards()
    assert set(loaded) == {"gpu-fleet.json", "service-slos.json"}
    assert len({d["uid"] for d in loaded.values()}) == len(loaded)
    for name, dashboard in loaded.items():
        panel_ids = [p["id"] for p in dashboard["panels"]]
        assert len(panel_ids) == len(set(panel_ids)), name
        for expr in queries(dashboard):
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_gpu_dashboard_reads_only_exported_dcgm_metrics() -> None:
    used = referenced_metrics(dashboards()["gpu-fleet.json"])
    assert used and used <= GPU_METRIC_NAMES
    assert used >= GPU_METRIC_NAMES  # every GPU metric the exporter offers is on the fleet dashboard
