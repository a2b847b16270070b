"""Level-triggered reconciliation: make the backend's replicas match the stored services.

Each pass reads the whole desired state and asks the backend to converge; nothing
depends on having seen a particular change, so a restart simply starts over. The store's
change listener wakes a pass after every write, whoever made it (`watch`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from kgpu.api.models import InferenceService, object_key
from kgpu.controlplane.registry import BackendRegistry
from kgpu.controlplane.resources import ResourceService
from kgpu.controlplane.store import Change, ResourceStore

log = logging.getLogger("kgpu.reconciler")

MIN_GAP_S = 0.1


class Reconciler:
    def __init__(
        self,
        resources: ResourceService,
        backend: BackendRegistry,
        interval_s: float = 0.5,
        desired_replicas: Callable[[InferenceService], int] = lambda s: s.spec.replicas,
        on_service: Callable[[InferenceService], None] = lambda s: None,
    ) -> None:
        """``on_service`` sees every service after each pass has converged it (routing settings)."""
        self.resources = resources
        self.backend = backend
        self.desired_replicas = desired_replicas
        self.on_service = on_service
        self.interval_s = interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.desired: dict[str, int] = {}
        # Services written or deleted through the API since the current pass read the store:
        # the pass's older view must not undo what those writes already recorded.
        self._changed: set[str] = set()
        self._loop_thread: int | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    def watch(self, store: ResourceStore) -> None:
        """Follow the store's committed writes: each one is known at once and wakes a pass."""
        store.add_listener(self.on_change)

    def on_change(self, change: Change) -> None:
        stored = change.resource
        if stored.kind == "InferenceService":
            key = object_key(stored.namespace, stored.name)
            if change.type == "DELETED":
                self.record_delete(key)
            else:
                self.record_write(key, stored.body["spec"].get("replicas", 1))
        self.kick()

    def known(self, key: str) -> bool:
        """Whether the service exists as of the last pass or a later write (what the gateway routes by)."""
        return key in self.desired

    def service_keys(self) -> list[str]:
        return sorted(self.desired)

    def record_write(self, key: str, replicas: int) -> None:
        """An API write of service `key`: known at once (the gateway routes by it), reconciled next pass."""
        self.desired[key] = replicas
        self._changed.add(key)

    def record_delete(self, key: str) -> None:
        self.desired.pop(key, None)
        self._changed.add(key)

    def kick(self) -> None:
        """Run a pass now (after an apply or delete) instead of at the next tick; from any thread."""
        loop = self._event_loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._wake.set()
            return
        try:
            loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closed: nothing left to wake
            pass

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception:  # keep reconciling: one bad pass must not stop the platform
                log.exception("reconcile pass failed")
            # Coalesce bursts of kicks (every API write kicks): at most one pass per MIN_GAP_S, so a
            # busy API does not keep the event loop in back-to-back passes.
            await asyncio.sleep(MIN_GAP_S)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, self.interval_s - MIN_GAP_S))
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def reconcile_once(self) -> None:
        self._changed = set()
        # The store read blocks (SQLite/PostgreSQL driver calls): keep it off the event loop.
        services = await asyncio.to_thread(self.resources.services)
        await self.backend.sync_all_pools(await asyncio.to_thread(self.resources.pools))
        desired: dict[str, int] = {}
        for service in services:
            key = service.key
            if key in self._changed and key not in self.desired:
                continue  # deleted since the read: do not start its replicas again
            desired[key] = self.desired_replicas(service)
            await self.backend.ensure(service, desired[key])
            self.on_service(service)
        for key in self.backend.services():
            if key not in desired and key not in self._changed:
                await self.backend.remove(key)
        for key in list(self._changed):  # written or deleted while this pass ran: the newer word wins
            if key in self.desired:
                desired[key] = self.desired[key]
            else:
                desired.pop(key, None)
        self.desired = desired
