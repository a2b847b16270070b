"""A sim cluster's replicas are placed by the scheduling framework with the local backend's policy."""

from __future__ import annotations

from sqlalchemy import create_engine

from kgpu.backends.sim.nodes import SimNodes
from tests.controlplane.test_simnodes import cluster, gpu_service, pool


def placed(services) -> dict[str, str | None]:
    sim = SimNodes(create_engine("sqlite://"))
    lab, h100 = cluster(), pool(min_nodes=2, max_nodes=2)  # two nodes of 8 H100
    sim.sync([lab], [h100], services, now=0)
    sim.sync([lab], [h100], services, now=1000)  # the nodes have joined
    return {r.name: r.node for r in sim.replicas()}


def test_a_replica_fills_the_node_it_fits_exactly_where_first_fit_would_split_a_free_one():
    # a (4 GPUs) takes h100-0, b (6) only fits on h100-1; c (2 GPUs) then fits on both. First fit
    # took h100-0 and left two nodes with 2 free GPUs each; kgpu's policy fills h100-1 and keeps
    # 4 GPUs free together on h100-0.
    services = [gpu_service("a", gpus=4), gpu_service("b", gpus=6), gpu_service("c", gpus=2)]
    assert placed(services) == {"a-0": "h100-0", "b-0": "h100-1", "c-0": "h100-1"}


def test_a_replica_that_fits_nowhere_stays_pending_with_the_resource_it_lacks():
    services = [gpu_service("a", gpus=6), gpu_service("b", gpus=6), gpu_service("c", gpus=4)]
    sim = SimNodes(create_engine("sqlite://"))
    lab, h100 = cluster(), pool(min_nodes=2, max_nodes=2)
    sim.sync([lab], [h100], services, now=0)
    sim.sync([lab], [h100], services, now=1000)
    [c] = sim.replicas("default/c")
    assert c.node is None and "Insufficient nvidia.com/gpu" in c.message
