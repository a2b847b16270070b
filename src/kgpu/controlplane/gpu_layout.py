"""Each node's GPUs cut into what replicas hold: whole GPUs, MIG slices, shares, and what is free.

The console's node-pool page draws this so fragmentation shows at a glance (a 3g slice free on
every GPU, yet no GPU free for a whole-GPU replica). On this machine the local backend's device
assignments say exactly which replica holds which GPU, MIG device or share. A sim cluster places
replicas on nodes by resource count (as kube-scheduler does with extended resources: no device
identity), so on a virtual node the replicas fill the node's slots of their resource in GPU order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kgpu.api.models import object_key
from kgpu.gpu.catalog import get_model, mig_profile_of_resource


def _mig_size(model_name: str | None, profile: str) -> float:
    """A MIG profile's share of its GPU (memory slices out of the GPU's, as the hardware cuts it)."""
    try:
        model = get_model(model_name) if model_name else None
    except KeyError:
        model = None
    if model is None or not model.mig_profiles:
        return 1.0 / 7
    full = max(p.memory_slices for p in model.mig_profiles)
    try:
        return model.mig_profile(profile).memory_slices / full
    except KeyError:
        return 1.0 / 7


def _slot(label: str, size: float, replica: str | None = None, service: str | None = None) -> dict:
    return {"label": label, "size": round(size, 4), "replica": replica, "service": service}


def _with_free(slots: list[dict]) -> list[dict]:
    used = sum(s["size"] for s in slots)
    return [*slots, _slot("free", 1.0 - used)] if used < 0.999 else slots


def local_node(inventory: Any, replicas: list[Any], assignment: Callable[[str], Any]) -> dict:
    """This machine: `replicas` are the local backend's ReplicaStatus, `assignment` its device allocator's."""
    live = [r for r in replicas if r.phase not in ("Pending", "Terminated")]
    assigned = [(r, a) for r in live if (a := assignment(r.name)) is not None]
    gpus = []
    for gpu in inventory.gpus:
        model = gpu.catalog_model
        if gpu.mig_enabled:
            slots = []
            for mig in gpu.mig_devices:
                holders = [r for r, a in assigned if a.mig_uuid == mig.uuid]
                slots.append(
                    _slot(
                        f"MIG {mig.profile or 'slice'}",
                        _mig_size(model, mig.profile or ""),
                        ",".join(r.name for r in holders) or None,
                        ",".join(sorted({r.service for r in holders})) or None,
                    )
                )
            mode = "mig"
        else:
            holders = [(r, a) for r, a in assigned if gpu.index in a.gpu_indices and not a.mig_uuid]
            slots = _with_free(
                [_slot(r.device, (a.milli_per_gpu or 1000) / 1000, r.name, r.service) for r, a in holders]
            )
            mode = "shared" if any(a.shared for _, a in holders) else "whole"
        gpus.append(
            {"index": gpu.index, "model": model or gpu.name, "memoryMiB": gpu.memory_total_mib, "mode": mode,
             "slots": slots}
        )  # fmt: skip
    return {
        "name": inventory.hostname,
        "pool": None,
        "backend": "local",
        "status": "Ready",
        "gpus": gpus,
        "cpuReplicas": [r.name for r, a in assigned if not a.gpu_indices and not a.mig_uuid],
    }


def sim_nodes(node_items: list[dict], replicas: list[Any]) -> list[dict]:
    """Virtual nodes (the sim backend's `node_items`) with their placed replicas (its ReplicaStatus,
    whose `extra` names the pool and the GPU resource each holds)."""
    out = []
    for item in node_items:
        gpu_count = len(item["gpus"])
        shared = next((k for k in item.get("allocatable", {}) if k.endswith(".shared")), None)
        per_gpu = item["allocatable"][shared] // gpu_count if shared and gpu_count else 0
        gpus = []
        for gpu in item["gpus"]:
            if gpu["mig_enabled"]:
                slots = [
                    {**_slot(f"MIG {m['profile']}", _mig_size(gpu["catalog_model"], m["profile"])), "profile": m["profile"]}
                    for m in gpu["mig_devices"]
                ]  # fmt: skip
                mode = "mig"
            elif per_gpu:
                slots = [_slot(f"share {k + 1}/{per_gpu}", 1.0 / per_gpu) for k in range(per_gpu)]
                mode = "shared"
            else:
                slots = [_slot("whole GPU", 1.0)]
                mode = "whole"
            gpus.append(
                {"index": gpu["index"], "model": gpu["catalog_model"], "memoryMiB": gpu["memory_total_mib"],
                 "mode": mode, "slots": slots}
            )  # fmt: skip
        mine = [
            r
            for r in replicas
            if r.node == item["hostname"] and r.extra.get("pool") == item["pool"] and r.extra.get("resource")
        ]
        for replica in mine:
            _fill(gpus, replica)
        out.append(
            {
                "name": item["hostname"],
                "pool": object_key(item["namespace"], item["pool"]),
                "backend": "sim",
                "status": item["status"],
                "gpus": gpus,
                "cpuReplicas": [],
            }
        )
    return out


def _fill(gpus: list[dict], replica: Any) -> None:
    profile = mig_profile_of_resource(replica.extra["resource"])
    wanted = replica.extra["count"]
    for gpu in gpus:
        for slot in gpu["slots"]:
            if wanted == 0:
                return
            if slot["replica"] is not None:
                continue
            fits = slot.get("profile") == profile if profile else gpu["mode"] != "mig"
            if fits:
                slot["replica"], slot["service"] = replica.name, replica.service
                wanted -= 1
