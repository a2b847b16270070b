"""The local backend: replicas are child processes on this machine.

Replicas are named like a StatefulSet's pods (`minilm-0`, `minilm-1`, ...) so that
scaling down always removes the highest index and names stay readable; a name carries its
namespace (`minilm-0.team-a`, see `kgpu.api.models.replica_name`), so two projects' services
of the same name share no log file, device or metrics label.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

from kgpu.api.models import Cluster, InferenceService, replica_index, replica_name
from kgpu.backends.base import DeviceUse, OneMachineBackend, ReplicaHooks, ReplicaStatus
from kgpu.backends.local_devices import DEFAULT_SHARED_SLOTS, LocalDevices, Unschedulable
from kgpu.backends.local_replica import LocalReplica
from kgpu.gpu.discovery import NodeInventory
from kgpu.serving.replica_spec import build_replica_spec, model_location

log = logging.getLogger("kgpu.backends.local")


class LocalBackend(OneMachineBackend):
    def __init__(
        self,
        state_dir: Path,
        inventory: NodeInventory,
        hooks: ReplicaHooks,
        shared_slots: int = DEFAULT_SHARED_SLOTS,
        time_slice_replicas: int = 0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.inventory = inventory
        self.node = inventory.hostname
        # Every replica is placed by the scheduling framework over a snapshot of this machine.
        self.devices = LocalDevices(
            inventory, shared_slots=shared_slots, time_slice_replicas=time_slice_replicas
        )
        for note in self.devices.machine.notes:
            log.warning("%s", note)
        self.hooks = hooks
        self._replicas: dict[str, dict[str, LocalReplica]] = {}
        self._pending: dict[str, dict[str, str]] = {}  # service -> replica -> why it cannot start
        self._stopping: set[asyncio.Task] = set()
        self._draining_replicas: dict[str, LocalReplica] = {}

    def log_path(self, replica: str) -> Path:
        return self.state_dir / "logs" / f"{replica}.log"

    async def ensure(self, service: InferenceService, replicas: int, cluster: Cluster | None = None) -> None:
        """Converge to `replicas` replicas of the service's current template.

        A changed template (model, runtime, resources) rolls: replicas of the new template start
        beside the old ones, and the old ones drain once the new set is ready, so a rollout
        drops no request. When the new replicas cannot be placed because the old ones hold the
        devices, old replicas are drained one at a time to make room (like maxUnavailable: 1).
        """
        key = service.key
        template = service.template_hash()
        running = self._replicas.setdefault(key, {})

        current = sorted(
            (r for r in running.values() if r.template == template), key=lambda r: replica_index(r.name)
        )
        for replica in reversed(current[replicas:]):  # scale down: highest index first
            await self._stop(key, running.pop(replica.name))
        current = current[:replicas]

        # The devices are tried in index order until one replica does not fit; the rest are then
        # pending for the same reason without trying (bounded work however many replicas are wanted).
        names = self._free_names(service, running)
        spec = build_replica_spec(service, model_path=model_location(service.spec.model.uri))
        pending: dict[str, str] = {}
        blocked: str | None = None
        while len(current) + len(pending) < replicas:
            name = next(names)
            if blocked is None:
                try:
                    assignment = self.devices.assign(
                        name,
                        service.gpu_request(),
                        service.spec.runtime.device,
                        service.spec.gpu_models,
                        service.spec.resources.cpu_memory_request(),
                    )
                except Unschedulable as exc:
                    blocked = str(exc)
            if blocked is not None:
                pending[name] = blocked
                continue
            replica = LocalReplica(
                service=key,
                name=name,
                node=self.node,
                spec=spec,
                assignment=assignment,
                log_path=self.log_path(name),
                hooks=self.hooks,
                template=template,
            )
            running[name] = replica
            current.append(replica)
            replica.start()
        before = self._pending.get(key, {})
        if pending and (len(pending) != len(before) or set(pending.values()) != set(before.values())):
            first = next(iter(pending))
            self.hooks.on_event(key, f"{len(pending)} replica(s) pending ({first} first): {blocked}")
        self._pending[key] = pending

        old = sorted(
            (r for r in running.values() if r.template != template), key=lambda r: replica_index(r.name)
        )
        if not old:
            return
        if all(r.phase == "Ready" for r in current) and not pending:
            for replica in old:
                await self._stop(key, running.pop(replica.name))
        elif pending:
            await self._stop(key, running.pop(old[-1].name))

    def _free_names(self, service: InferenceService, running: dict[str, LocalReplica]) -> Iterator[str]:
        """Names by lowest free index, skipping those of running or still draining replicas.

        Names are never shared by two live processes, so the gateway's and the device allocator's
        bookkeeping (keyed by replica name) cannot mix up a draining replica with its successor.
        """
        taken = set(running) | set(self._draining_replicas)
        for index in itertools.count():
            name = replica_name(service.metadata.namespace, service.metadata.name, index)
            if name not in taken:
                yield name

    async def _stop(self, key: str, replica: LocalReplica) -> None:
        """Drain in the background so one slow replica does not hold up the others."""

        async def stop_and_release() -> None:
            try:
                await replica.stop(drain=True)
            finally:
                self.devices.release(replica.name)

        task = asyncio.create_task(stop_and_release())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        self._draining_replicas[replica.name] = replica
        task.add_done_callback(lambda _t: self._draining_replicas.pop(replica.name, None))

    async def restart_replica(self, key: str, name: str) -> bool:
        """Replace one replica (like deleting a pod): it drains and stops, and the next reconcile
        starts a fresh one in its place. False when the service has no such running replica."""
        replica = self._replicas.get(key, {}).pop(name, None)
        if replica is None:
            return False
        self.hooks.on_event(key, f"replica {name} restarting on request: draining, a new replica replaces it")
        await self._stop(key, replica)
        return True

    async def remove(self, key: str) -> None:
        for replica in list(self._replicas.pop(key, {}).values()):
            await self._stop(key, replica)
        self._pending.pop(key, None)

    def replicas(self, key: str | None = None) -> list[ReplicaStatus]:
        out: list[ReplicaStatus] = []
        keys = [key] if key else sorted(set(self._replicas) | set(self._pending))
        for k in keys:
            for replica in sorted(self._replicas.get(k, {}).values(), key=lambda r: replica_index(r.name)):
                out.append(replica.status())
            for name, why in sorted(self._pending.get(k, {}).items()):
                out.append(
                    ReplicaStatus(name=name, service=k, phase="Pending", node="", device="", message=why)
                )
        for replica in self._draining_replicas.values():
            if key is None or replica.service == key:
                out.append(replica.status())
        return out

    def services(self) -> list[str]:
        return sorted(k for k, v in self._replicas.items() if v)

    def placed(self, service_key: str) -> bool:
        return bool(self._replicas.get(service_key)) or bool(self._pending.get(service_key))

    def devices_of(self, replica: str) -> DeviceUse | None:
        return self.devices.assignment(replica)

    async def shutdown(self) -> None:
        for key in list(self._replicas):
            await self.remove(key)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
