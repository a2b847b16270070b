"""Which device of this machine a local replica runs on, placed by the scheduling framework.

The machine is a scheduling snapshot built from GPU discovery (:mod:`kgpu.scheduling.machine`)
and every replica goes through one cycle of the framework (filters, kgpu's default policy,
reserve); a stopped replica's placement is unreserved, so the snapshot always holds exactly
the live replicas. What a service's resources ask for becomes a request:

- ``nvidia.com/gpu: N``: N whole GPUs (``CUDA_VISIBLE_DEVICES`` = their UUIDs);
- ``nvidia.com/gpu.shared``: a share of one GPU, ``1000 / shared_slots`` milli-GPU, capped to the
  same part of the GPU's memory; on a machine set up for time-slicing, one time slice instead;
- ``nvidia.com/mig-<profile>``: a free existing MIG device of that profile;
Every request also carries the replica's CPU and memory request, so a replica that does not fit in
what is left of this machine's CPU cores and memory stays Pending ("Insufficient cpu or memory"),
as a pod does on a full node.

- no GPU resource: the CPU, unless the runtime's device is ``auto`` or ``cuda`` and a GPU is
  there, in which case the replica takes a share (the embedded convenience: ``kgpu up`` uses the
  GPU when there is one; ``auto`` falls back to the CPU when no share is left).

:meth:`LocalDevices.place` takes any framework request (milli-GPU shares, GPU-memory shares, time
slices), so the same placements are reachable without a service.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kgpu.backends.base import PLACEMENT_POLICY, typical_requests
from kgpu.gpu.discovery import NodeInventory
from kgpu.scheduling.machine import MachineSnapshot
from kgpu.scheduling.policies import make_framework
from kgpu.scheduling.requests import MILLI, PodRequest
from kgpu.scheduling.snapshot import Placement

SHARED_RESOURCE = "nvidia.com/gpu.shared"
WHOLE_RESOURCE = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
# Replicas per GPU when `nvidia.com/gpu.shared` is used (each gets an equal share and memory cap).
DEFAULT_SHARED_SLOTS = 4
LOCAL_POLICY = PLACEMENT_POLICY


class Unschedulable(Exception):
    """No device on this node can take the replica; the message says why, like kube-scheduler's."""


@dataclass
class Assignment:
    device: str  # "cpu" or "cuda"
    visible_devices: str | None  # CUDA_VISIBLE_DEVICES value
    memory_fraction: float | None  # torch per-process cap when the GPU is shared
    label: str  # for `kgpu get replicas`
    gpu_indices: tuple[int, ...] = ()
    mig_uuid: str | None = None
    shared: bool = False
    milli_per_gpu: int = 0  # milli-GPU held on each of gpu_indices (whole GPUs and shares)
    time_slice: bool = False
    placement: Placement | None = field(default=None, repr=False)


_CPU = Assignment(device="cpu", visible_devices="", memory_fraction=None, label="cpu")


class LocalDevices:
    def __init__(
        self,
        inventory: NodeInventory,
        shared_slots: int = DEFAULT_SHARED_SLOTS,
        time_slice_replicas: int = 0,
        policy: str = LOCAL_POLICY,
    ) -> None:
        if not 1 <= shared_slots <= MILLI:
            raise ValueError(f"shared_slots must be in 1..{MILLI}, got {shared_slots}")
        self.inventory = inventory
        self.shared_slots = shared_slots
        self.machine = MachineSnapshot(inventory, time_slice_replicas)
        self.snapshot = self.machine.snapshot
        # kgpu's policy measures fragmentation against typical pods: here whole GPUs and shared slots.
        self.framework = self.machine.framework(
            make_framework(
                policy, self.snapshot, typical_requests(shared_slots), rng=np.random.default_rng(0)
            )
        )
        self._by_replica: dict[str, tuple[Assignment, PodRequest]] = {}

    # -- what a service asks for --------------------------------------------------------------
    def share_request(self, gpu_models: list[str] | tuple[str, ...] = (), **cpu_memory: int) -> PodRequest:
        if self.machine.time_slice_replicas:
            return PodRequest(time_slice=True, gpu_models=tuple(gpu_models), **cpu_memory)
        return PodRequest(
            gpu_count=1, gpu_milli=MILLI // self.shared_slots, gpu_models=tuple(gpu_models), **cpu_memory
        )

    def assign(
        self,
        replica: str,
        gpu_request: tuple[str, int] | None,
        runtime_device: str,
        gpu_models: list[str],
        cpu_memory: tuple[int, int] = (0, 0),
    ) -> Assignment:
        """`cpu_memory`: the replica's (milli-CPU, bytes) request, reserved on this machine."""
        if replica in self._by_replica:
            return self._by_replica[replica][0]
        models = tuple(gpu_models)
        cpu_milli, memory_bytes = cpu_memory
        # Memory is counted in MiB, rounded up; a machine whose memory is unknown (0) counts none.
        host = {
            "cpu_milli": cpu_milli,
            "memory_mib": -(-memory_bytes // 2**20) if self.inventory.memory_mib else 0,
        }
        if gpu_request is None:
            return self._cpu_or_opportunistic(replica, runtime_device, models, host)
        name, count = gpu_request
        if name == WHOLE_RESOURCE:
            whole = PodRequest(gpu_count=count, gpu_milli=MILLI, gpu_models=models, **host)
            return self.place(replica, whole, name)
        if name == SHARED_RESOURCE:
            return self.place(replica, self.share_request(models, **host), name)
        if name.startswith(MIG_PREFIX):
            mig = PodRequest(mig_profile=name.removeprefix(MIG_PREFIX), gpu_models=models, **host)
            return self.place(replica, mig, name)
        raise Unschedulable(f"0/1 nodes are available: 1 Insufficient {name}.")

    def _cpu_or_opportunistic(
        self, replica: str, runtime_device: str, models: tuple[str, ...], host: dict[str, int]
    ) -> Assignment:
        usable = [
            g for g in self.inventory.gpus if not g.mig_enabled and (not models or g.catalog_model in models)
        ]
        if runtime_device == "cpu" or not usable:
            if runtime_device == "cuda":
                raise Unschedulable("runtime.device is cuda but this node has no usable NVIDIA GPU")
            return self.place(replica, PodRequest(**host), "cpu")
        try:
            return self.place(replica, self.share_request(models, **host), "GPU share")
        except Unschedulable:
            if runtime_device == "cuda":
                raise
            return self.place(replica, PodRequest(**host), "cpu")

    # -- placement through the framework ------------------------------------------------------
    def place(self, replica: str, request: PodRequest, resource: str | None = None) -> Assignment:
        """Place ``request`` for ``replica`` (one framework cycle) and reserve it; Unschedulable
        names the resource (``resource``, or one derived from the request) when nothing fits."""
        if replica in self._by_replica:
            return self._by_replica[replica][0]
        placement = self.framework.schedule(request)
        if placement is None:
            raise Unschedulable(self._why(request, resource or _resource_of(request)))
        assignment = self._assignment(placement, request)
        self._by_replica[replica] = (assignment, request)
        return assignment

    def assignment(self, replica: str) -> Assignment | None:
        """The device a replica holds (None when it holds none), read by the GPU exporter."""
        held = self._by_replica.get(replica)
        return held[0] if held else None

    def assignments(self) -> dict[str, Assignment]:
        """Every live replica's assignment."""
        return {name: held[0] for name, held in self._by_replica.items()}

    def release(self, replica: str) -> None:
        """Unreserve what the replica held: the snapshot is as if it had never been placed."""
        held = self._by_replica.pop(replica, None)
        if held is None:
            return
        assignment, request = held
        if assignment.placement is not None:
            self.framework.unreserve(assignment.placement, request)

    def _assignment(self, placement: Placement, request: PodRequest) -> Assignment:
        if placement.kind == "none":
            return Assignment(**{**_CPU.__dict__, "placement": placement})
        if placement.kind == "mig":
            mig = self.machine.mig_device_at(placement)
            return Assignment(
                device="cuda",
                visible_devices=mig.uuid,
                memory_fraction=None,
                label=f"cuda:{mig.gpu_index} MIG {mig.profile}",
                mig_uuid=mig.uuid,
                placement=placement,
            )
        gpus = self.machine.devices_of(placement)
        indices = tuple(g.index for g in gpus)
        if placement.kind == "whole":
            return Assignment(
                device="cuda",
                visible_devices=",".join(g.uuid for g in gpus),
                memory_fraction=None,
                label=",".join(f"cuda:{i}" for i in indices),
                gpu_indices=indices,
                milli_per_gpu=placement.milli_per_gpu,
                placement=placement,
            )
        gpu = gpus[0]
        if placement.kind == "time-slice":
            replicas = self.machine.time_slice_replicas
            fraction = 1.0 / replicas
            label = f"cuda:{gpu.index} (time slice 1/{replicas}, {fraction:.0%} memory)"
        else:
            if placement.kind == "memory-share" and gpu.memory_total_mib > 0:
                fraction = min(1.0, request.gpu_memory_mib / gpu.memory_total_mib)
            else:
                fraction = placement.milli_per_gpu / MILLI
            label = f"cuda:{gpu.index} (shared, {fraction:.0%} memory)"
        return Assignment(
            device="cuda",
            visible_devices=gpu.uuid,
            memory_fraction=fraction,
            label=label,
            gpu_indices=indices,
            shared=True,
            milli_per_gpu=placement.milli_per_gpu,
            time_slice=placement.kind == "time-slice",
            placement=placement,
        )

    def _why(self, request: PodRequest, resource: str) -> str:
        """kube-scheduler's style of reason, from the filter that turned the machine down."""
        failed = self.machine.failing_filter(self.framework, request)
        head = "0/1 nodes are available: 1"
        if failed == "NodeResourcesFit":
            return f"{head} Insufficient cpu or memory."
        if failed == "GpuModelMatch":
            return f"{head} Insufficient {resource} (no GPU of model {', '.join(request.gpu_models)})."
        if request.kind == "whole":
            s = self.snapshot
            allowed = s.model_idx >= 0
            if request.gpu_models:
                allowed &= np.isin(
                    s.model_idx,
                    [s.model_index(m) for m in request.gpu_models if s.model_index(m) is not None],
                )
            free = int(((s.gpu_left == MILLI) & allowed[:, None]).sum())
            return f"{head} Insufficient {resource} (requested {request.gpu_count}, free {free})."
        return f"{head} Insufficient {resource}."


def _resource_of(request: PodRequest) -> str:
    kind = request.kind
    if kind == "mig":
        return f"{MIG_PREFIX}{request.mig_profile}"
    if kind == "whole":
        return WHOLE_RESOURCE
    if kind == "none":
        return "cpu"
    if kind == "memory-share":
        return f"GPU memory ({request.gpu_memory_mib} MiB on one GPU)"
    if kind == "time-slice":
        return SHARED_RESOURCE
    return f"GPU share ({request.gpu_milli} milli-GPU)"
