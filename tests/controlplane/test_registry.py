"""Which cluster a service or pool runs on, as the backend registry resolves it."""

from __future__ import annotations

from pathlib import Path

from kgpu.api.io import load_resource_file
from kgpu.api.models import Cluster, NodePool
from kgpu.backends.base import OneMachineBackend
from kgpu.controlplane.registry import BackendRegistry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sim-cluster.yaml"


async def test_a_cluster_created_after_the_cached_read_is_found_not_reported_missing():
    """A file applying a Cluster with its pools: the pass that sees the pool may hold an older list."""
    resources = load_resource_file(EXAMPLE)
    cluster = next(r for r in resources if isinstance(r, Cluster))
    pool = next(r for r in resources if isinstance(r, NodePool))
    stored: list[Cluster] = []
    events: list[str] = []
    backends = BackendRegistry(
        {"local": OneMachineBackend()},
        clusters=lambda: list(stored),
        on_event=lambda key, m: events.append(m),
    )
    assert await backends.clusters() == []  # cached now
    stored.append(cluster)
    assert await backends._target(pool) == (True, None)  # found; a sim cluster runs nothing on Kubernetes
    assert events == []

    missing = pool.model_copy(deep=True)
    missing.metadata.annotations["kgpu.dev/cluster"] = "nope"
    assert await backends._target(missing) == (False, None)
    assert await backends._target(missing) == (False, None)
    assert len(events) == 1 and 'Not found: "nope"' in events[0]  # reported once, not every pass
