"""Level-triggered reconciliation: make the backend's replicas match the stored services.

Each pass reads the whole desired state and asks the backend to converge; nothing
depends on having seen a particular change, so a restart simply starts over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kgpu.api.models import InferenceService
from kgpu.backends.base import Backend
from kgpu.backends.local import service_key
from kgpu.controlplane.resources import ResourceService

log = logging.getLogger("kgpu.reconciler")

MIN_GAP_S = 0.1


class Reconciler:
    def __init__(
        self,
        resources: ResourceService,
        backend: Backend,
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

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    def record_write(self, key: str, replicas: int) -> None:
        """An API write of service `key`: known at once (the gateway routes by it), reconciled next pass."""
        self.desired[key] = replicas
        self._changed.add(key)

    def record_delete(self, key: str) -> None:
        self.desired.pop(key, None)
        self._changed.add(key)

    def kick(self) -> None:
        """Run a pass now (after an apply or delete) instead of at the next tick."""
        self._wake.set()

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
        sync_pools = getattr(self.backend, "sync_pools", None)
        if sync_pools is not None:  # node pools placed on Kubernetes clusters
            await sync_pools(await asyncio.to_thread(self.resources.pools))
        desired: dict[str, int] = {}
        for service in services:
            key = service_key(service)
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
