"""Which device of this machine a local replica runs on.

One node, a handful of GPUs: a whole GPU per `nvidia.com/gpu` unit, a MIG device
per `nvidia.com/mig-<profile>` unit, and for `nvidia.com/gpu.shared` a slot on a
GPU that already carries shared replicas, capped to an equal part of its memory.
A service that asks for no GPU runs on the CPU unless its runtime says `device:
auto` and the node has a GPU, in which case it shares the least busy GPU (the
embedded convenience: `kgpu up` uses the GPU when there is one). Placement across
many nodes and sharing policies belong to the scheduler; this module only hands
out what one machine has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kgpu.gpu.discovery import NodeInventory

SHARED_RESOURCE = "nvidia.com/gpu.shared"
WHOLE_RESOURCE = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
# Replicas per GPU when `nvidia.com/gpu.shared` is used (time-slicing style).
DEFAULT_SHARED_SLOTS = 4


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


@dataclass
class _GPUUse:
    exclusive_owner: str | None = None
    shared_owners: set[str] = field(default_factory=set)


class LocalDevices:
    def __init__(self, inventory: NodeInventory, shared_slots: int = DEFAULT_SHARED_SLOTS) -> None:
        self.inventory = inventory
        self.shared_slots = shared_slots
        self._use = {g.index: _GPUUse() for g in inventory.gpus}
        self._mig_owner: dict[str, str] = {}
        self._by_replica: dict[str, Assignment] = {}

    def assign(
        self, replica: str, gpu_request: tuple[str, int] | None, runtime_device: str, gpu_models: list[str]
    ) -> Assignment:
        if replica in self._by_replica:
            return self._by_replica[replica]
        gpus = [g for g in self.inventory.gpus if not gpu_models or g.catalog_model in gpu_models]
        if gpu_request is None:
            assignment = self._cpu_or_opportunistic(replica, runtime_device, gpus)
        else:
            name, count = gpu_request
            if name == WHOLE_RESOURCE:
                assignment = self._whole(replica, count, gpus)
            elif name == SHARED_RESOURCE:
                assignment = self._shared(replica, gpus, strict=True)
            elif name.startswith(MIG_PREFIX):
                assignment = self._mig(replica, name.removeprefix(MIG_PREFIX), gpus)
            else:
                raise Unschedulable(f"0/1 nodes are available: 1 Insufficient {name}.")
        self._by_replica[replica] = assignment
        return assignment

    def assignment(self, replica: str) -> Assignment | None:
        """The device a replica holds (None when it holds none), read by the GPU exporter."""
        return self._by_replica.get(replica)

    def release(self, replica: str) -> None:
        assignment = self._by_replica.pop(replica, None)
        if assignment is None:
            return
        for index in assignment.gpu_indices:
            use = self._use[index]
            if use.exclusive_owner == replica:
                use.exclusive_owner = None
            use.shared_owners.discard(replica)
        if assignment.mig_uuid:
            self._mig_owner.pop(assignment.mig_uuid, None)

    def _cpu_or_opportunistic(self, replica: str, runtime_device: str, gpus) -> Assignment:
        if runtime_device == "cpu" or not gpus:
            if runtime_device == "cuda":
                raise Unschedulable("runtime.device is cuda but this node has no usable NVIDIA GPU")
            return Assignment(device="cpu", visible_devices="", memory_fraction=None, label="cpu")
        try:
            return self._shared(replica, gpus, strict=False)
        except Unschedulable:
            return Assignment(device="cpu", visible_devices="", memory_fraction=None, label="cpu")

    def _whole(self, replica: str, count: int, gpus) -> Assignment:
        free = [
            g
            for g in gpus
            if not g.mig_enabled
            and self._use[g.index].exclusive_owner is None
            and not self._use[g.index].shared_owners
        ]
        if len(free) < count:
            raise Unschedulable(
                f"0/1 nodes are available: 1 Insufficient nvidia.com/gpu (requested {count}, free {len(free)})."
            )
        chosen = free[:count]
        for g in chosen:
            self._use[g.index].exclusive_owner = replica
        indices = tuple(g.index for g in chosen)
        return Assignment(
            device="cuda",
            visible_devices=",".join(g.uuid for g in chosen),
            memory_fraction=None,
            label=",".join(f"cuda:{i}" for i in indices),
            gpu_indices=indices,
        )

    def _shared(self, replica: str, gpus, strict: bool) -> Assignment:
        candidates = [
            g
            for g in gpus
            if not g.mig_enabled
            and self._use[g.index].exclusive_owner is None
            and len(self._use[g.index].shared_owners) < self.shared_slots
        ]
        if not candidates:
            what = SHARED_RESOURCE if strict else "GPU share"
            raise Unschedulable(f"0/1 nodes are available: 1 Insufficient {what}.")
        # Fill the GPU that already has the most shared replicas (keep whole GPUs free).
        gpu = max(candidates, key=lambda g: (len(self._use[g.index].shared_owners), -g.index))
        self._use[gpu.index].shared_owners.add(replica)
        fraction = 1.0 / self.shared_slots
        return Assignment(
            device="cuda",
            visible_devices=gpu.uuid,
            memory_fraction=fraction,
            label=f"cuda:{gpu.index} (shared, {fraction:.0%} memory)",
            gpu_indices=(gpu.index,),
            shared=True,
        )

    def _mig(self, replica: str, profile: str, gpus) -> Assignment:
        for g in gpus:
            for mig in g.mig_devices:
                if mig.profile == profile and mig.uuid not in self._mig_owner:
                    self._mig_owner[mig.uuid] = replica
                    return Assignment(
                        device="cuda",
                        visible_devices=mig.uuid,
                        memory_fraction=None,
                        label=f"cuda:{g.index} MIG {profile}",
                        mig_uuid=mig.uuid,
                    )
        raise Unschedulable(f"0/1 nodes are available: 1 Insufficient nvidia.com/mig-{profile}.")
