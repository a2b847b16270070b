"""This machine as a scheduling snapshot, built from GPU discovery.

The local backend places replicas on one machine through the same framework as the simulator and
the node-pool advice. The machine becomes one snapshot node per (GPU model, sharing mode) group
(normally exactly one node: one model, MIG on or off), holding the GPUs in index order:

- GPUs without MIG are ``exclusive`` (whole GPUs and milli-GPU shares) or, when the machine is set
  up for time-slicing, ``time-slicing`` with that many replicas per GPU;
- GPUs with MIG enabled are ``mig``. Unlike a simulated node, whose MIG instances can be created
  anywhere, a real GPU has the MIG devices its administrator created: a request may only take a free
  existing device of its profile, which :class:`ExistingMigDevice` (a filter) and
  :class:`MachineGpuSelector` enforce, and :meth:`MachineSnapshot.free_device_slot` (the
  framework's ``mig_slot``) reserves that device's memory slices.

A CPU-only machine is one node without GPUs: requests without a GPU still go through the cycle.
Local replicas request CPU and memory here as pods do (see :mod:`kgpu.backends.local_devices`);
on a machine with GPUs of several models each group's node counts the whole machine's CPU and
memory, so CPU and memory are enforced per group there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from kgpu.gpu.catalog import GPUModel, MigProfile, get_model
from kgpu.gpu.discovery import GPUDevice, NodeInventory
from kgpu.gpu.mig import place_mig_layout
from kgpu.scheduling.context import RequestContext
from kgpu.scheduling.framework import Framework, GpuSelector
from kgpu.scheduling.requests import PodRequest
from kgpu.scheduling.snapshot import ClusterSnapshot, NodeSpec, Placement


@dataclass(frozen=True)
class MigSlot:
    """An existing MIG device and the memory slices its GPU instance covers."""

    uuid: str
    profile: str
    start: int
    size: int
    gpu_index: int


def gpu_model_of(gpu: GPUDevice) -> GPUModel:
    """The catalog model of a discovered GPU, or one made from its NVML readout when the catalog lacks it."""
    if gpu.catalog_model:
        return get_model(gpu.catalog_model)
    return GPUModel(
        name=gpu.name,
        vendor="nvidia",
        memory_gib=gpu.memory_total_mib // 1024,
        nvml_names=(gpu.name,),
        resource_name="nvidia.com/gpu",
    )


def mig_slots(gpu: GPUDevice, model: GPUModel) -> tuple[list[MigSlot], list[str]]:
    """The GPU's MIG devices with their memory slices, and notes on devices that cannot be used.

    NVML gives each GPU instance's placement when the host lets it be read; otherwise the
    placements come from the catalog's geometry for the same set of profiles (the slices then
    match the real ones in count and never overlap, which is all the snapshot needs).
    """
    notes = [
        f"MIG device {d.uuid} on GPU {gpu.index}: unknown profile" for d in gpu.mig_devices if not d.profile
    ]
    devices = [d for d in gpu.mig_devices if d.profile]
    if not devices:
        return [], notes
    if all(d.placement_start is not None for d in devices):
        sizes = {}
        for d in devices:
            try:
                sizes[d.uuid] = d.placement_size or model.mig_profile(d.profile or "").memory_slices
            except KeyError:
                sizes[d.uuid] = 0
        slots = [
            MigSlot(d.uuid, d.profile or "", int(d.placement_start or 0), sizes[d.uuid], gpu.index)
            for d in devices
            if sizes[d.uuid]
        ]
        return sorted(slots, key=lambda s: s.start), notes
    layout = Counter(d.profile or "" for d in devices)
    try:
        placed = place_mig_layout(model, dict(layout))
    except ValueError as exc:
        return [], [*notes, f"MIG devices on GPU {gpu.index} not used: {exc}"]
    by_profile: dict[str, list] = {}
    for p in placed:
        by_profile.setdefault(p.profile, []).append(p)
    slots = []
    for d in sorted(devices, key=lambda d: (d.gpu_instance_id is None, d.gpu_instance_id or 0, d.uuid)):
        p = by_profile[d.profile or ""].pop(0)
        slots.append(MigSlot(d.uuid, d.profile or "", p.start, p.size, gpu.index))
    return sorted(slots, key=lambda s: s.start), notes


class MachineSnapshot:
    """A :class:`ClusterSnapshot` of this machine and the map between its GPU slots and real devices."""

    def __init__(self, inventory: NodeInventory, time_slice_replicas: int = 0) -> None:
        if time_slice_replicas == 1 or time_slice_replicas < 0:
            raise ValueError(f"time_slice_replicas must be 0 (off) or at least 2, got {time_slice_replicas}")
        self.inventory = inventory
        self.time_slice_replicas = time_slice_replicas
        groups: dict[tuple[str, str], list[GPUDevice]] = {}
        models: dict[str, GPUModel] = {}
        for gpu in sorted(inventory.gpus, key=lambda g: g.index):
            model = gpu_model_of(gpu)
            models[model.name] = model
            mode = "mig" if gpu.mig_enabled else ("time-slicing" if time_slice_replicas else "exclusive")
            groups.setdefault((model.name, mode), []).append(gpu)
        specs: list[NodeSpec] = []
        self.gpus: dict[tuple[int, int], GPUDevice] = {}
        self.slot_of: dict[int, tuple[int, int]] = {}
        self.mig: dict[tuple[int, int], list[MigSlot]] = {}
        self.notes: list[str] = []
        host = inventory.hostname or "localhost"
        for n, ((model_name, mode), gpus) in enumerate(groups.items()):
            model = models[model_name]
            specs.append(
                NodeSpec(
                    name=host if len(groups) == 1 else f"{host}/{model_name}/{mode}",
                    cpu_milli=inventory.cpu_count * 1000,
                    memory_mib=inventory.memory_mib,
                    gpu_count=len(gpus),
                    gpu_model=model.name,
                    sharing=mode,
                    time_slice_replicas=time_slice_replicas if mode == "time-slicing" else 0,
                    model_spec=None if gpu_models_in_catalog(model) else model,
                )
            )
            for slot, gpu in enumerate(gpus):
                self.gpus[(n, slot)] = gpu
                self.slot_of[gpu.index] = (n, slot)
                if mode == "mig":
                    self.mig[(n, slot)], notes = mig_slots(gpu, model)
                    self.notes.extend(notes)
        if not specs:
            specs.append(
                NodeSpec(name=host, cpu_milli=inventory.cpu_count * 1000, memory_mib=inventory.memory_mib)
            )
        self.snapshot = ClusterSnapshot(specs)

    def free_mig_devices(self, node: int, slot: int, profile: str) -> list[MigSlot]:
        """Devices of ``profile`` on one GPU that no placement in the snapshot holds, by start."""
        taken = set(self.snapshot.mig_instances.get((node, slot), []))
        return [
            d
            for d in self.mig.get((node, slot), [])
            if d.profile == profile and (d.profile, d.start, d.size) not in taken
        ]

    def mig_device_at(self, placement: Placement) -> MigSlot:
        """The existing MIG device a MIG placement stands for."""
        for d in self.mig.get((placement.node, placement.gpus[0]), []):
            if (d.profile, d.start, d.size) == (
                placement.mig_profile,
                placement.mig_start,
                placement.mig_size,
            ):
                return d
        raise KeyError(f"no MIG device for {placement.to_dict()}")

    def devices_of(self, placement: Placement) -> list[GPUDevice]:
        return [self.gpus[(placement.node, g)] for g in placement.gpus]

    def framework(self, base: Framework) -> Framework:
        """``base`` (a policy's framework over this snapshot) made to use the MIG devices that exist."""
        if base.snapshot is not self.snapshot:
            raise ValueError("the framework must run over this machine's snapshot")
        if not any(isinstance(f, ExistingMigDevice) for f in base.filters):
            base.filters.append(ExistingMigDevice(self))
            base.selector = MachineGpuSelector(self, base.selector)
            base.mig_slot = self.free_device_slot
        return base

    def free_device_slot(self, _snapshot, node: int, gpu: int, profile: MigProfile) -> tuple[int, int] | None:
        """Where a MIG placement goes on this machine: the first free existing device of the profile."""
        free = self.free_mig_devices(node, gpu, profile.name)
        return (free[0].start, free[0].size) if free else None

    def failing_filter(self, framework: Framework, request: PodRequest) -> str | None:
        """Name of the first filter that rejects every node for ``request`` (None if some node passes)."""
        ctx = framework.context(request)
        mask = np.ones(self.snapshot.num_nodes, dtype=bool)
        for plugin in framework.filters:
            mask &= plugin.filter(ctx)
            if not mask.any():
                return plugin.name
        return None


def gpu_models_in_catalog(model: GPUModel) -> bool:
    try:
        return get_model(model.name) == model
    except KeyError:
        return False


class ExistingMigDevice:
    """A MIG request needs a free MIG device of its profile that exists on the node's GPUs."""

    name = "ExistingMigDevice"

    def __init__(self, machine: MachineSnapshot) -> None:
        self.machine = machine

    def filter(self, ctx: RequestContext) -> np.ndarray:
        mask = np.ones(ctx.snapshot.num_nodes, dtype=bool)
        if ctx.kind != "mig":
            return mask
        mask[:] = False
        for node, slot in self.machine.mig:
            if self.machine.free_mig_devices(node, slot, ctx.request.mig_profile or ""):
                mask[node] = True
        return mask


class MachineGpuSelector:
    """MIG: the fullest GPU with a free device of the profile (then lowest index); else ``inner``'s choice."""

    def __init__(self, machine: MachineSnapshot, inner: GpuSelector) -> None:
        self.machine = machine
        self.inner = inner

    def select(self, ctx: RequestContext, node: int) -> tuple[int, ...]:
        if ctx.kind != "mig":
            return self.inner.select(ctx, node)
        profile = ctx.request.mig_profile or ""
        best: tuple[int, int] | None = None
        for n, slot in self.machine.mig:
            if n != node or not self.machine.free_mig_devices(n, slot, profile):
                continue
            used = bin(int(ctx.snapshot.mig_used_mask[n, slot])).count("1")
            if best is None or used > best[0]:
                best = (used, slot)
        return () if best is None else (best[1],)
