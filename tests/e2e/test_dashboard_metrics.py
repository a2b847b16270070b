"""Every metric a dashboard reads exists in a scrape of the running platform (server and replicas)."""

from __future__ import annotations

import httpx
import torch
from prometheus_client.parser import text_string_to_metric_families

from kgpu.telemetry.dashboard_files import dashboards, referenced_metrics
from kgpu.telemetry.gpu_exporter import GPU_METRIC_NAMES

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def exposed_names(text: str) -> set[str]:
    """Sample names a scrape offers, including families with no children yet (HELP/TYPE only)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def test_dashboards_reference_only_metrics_the_platform_exports(platform):
    assert httpx.post(f"{platform.url}/v1/embeddings", json={"model": "minilm", "input": "x"}, timeout=30)
    names = exposed_names(platform.http.get("/metrics").text)
    for replica in platform.replicas():
        if replica["phase"] == "Ready":
            names |= exposed_names(httpx.get(f"{replica['url']}/metrics", timeout=10).text)
    used = set().union(*(referenced_metrics(d) for d in dashboards().values()))
    gpu_used = {n for n in used if n.startswith("DCGM_")}
    if torch.cuda.is_available():
        assert gpu_used <= names, sorted(gpu_used - names)
    else:
        # No GPU here: the server exports no GPU series, and the fake-NVML test shows these are emitted.
        assert not any(n.startswith("DCGM_") for n in names)
        assert gpu_used <= GPU_METRIC_NAMES
    missing = sorted((used - gpu_used) - names)
    assert not missing, missing
