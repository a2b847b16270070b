"""What a node pool offers: allocatable resources per node and in total, from its flavor and GPU sharing."""

from __future__ import annotations

from kgpu.api.models import NodePool
from kgpu.api.quantity import parse_quantity
from kgpu.gpu.catalog import VENDOR_RESOURCES, get_model, mig_resource_name


def gpu_resources_per_node(pool: NodePool) -> dict[str, int]:
    """Extended resources one node advertises, as the device plugin would name them."""
    flavor, sharing = pool.spec.flavor, pool.spec.sharing
    if not flavor.gpu_model or not flavor.gpu_count:
        return {}
    model = get_model(flavor.gpu_model)
    gpus = flavor.gpu_count
    if sharing.mode == "mig":
        return {mig_resource_name(model.vendor, p): n * gpus for p, n in (sharing.mig_layout or {}).items()}
    if sharing.mode in ("time-slicing", "mps"):
        # renameByDefault: shared replicas are advertised under the vendor's ".shared" name.
        shared = next(
            (r for r in VENDOR_RESOURCES[model.vendor] if r.endswith(".shared")), model.resource_name
        )
        return {shared: gpus * (sharing.replicas or 1)}
    return {model.resource_name: gpus}


def pool_status(pool: NodePool, nodes: int | None = None) -> dict:
    """The pool's status: nodes and what they offer.

    `nodes`: how many nodes the pool has (a sim cluster's virtual nodes); default minNodes.
    """
    flavor = pool.spec.flavor
    per_node: dict[str, str | int] = {}
    if flavor.cpu is not None:
        per_node["cpu"] = str(flavor.cpu)
    if flavor.memory is not None:
        per_node["memory"] = str(flavor.memory)
    per_node.update(gpu_resources_per_node(pool))
    nodes = pool.spec.min_nodes if nodes is None else nodes
    total: dict[str, str | int] = {}
    for name, value in per_node.items():
        if isinstance(value, int):
            total[name] = value * nodes
        else:
            total[name] = _scaled_quantity(value, nodes)
    status: dict = {
        "nodes": nodes,
        "flavor": {
            "name": flavor.name,
            "kind": flavor.kind,
            "gpuModel": flavor.gpu_model,
            "gpuCount": flavor.gpu_count,
        },
        "allocatablePerNode": per_node,
        "allocatable": total,
        "sharing": pool.spec.sharing.mode,
    }
    if pool.spec.sharing.mig_layout:
        status["migLayout"] = dict(pool.spec.sharing.mig_layout)
    return status


def _scaled_quantity(value: str, factor: int) -> str:
    """CPU in cores (or millicores) and memory in the largest binary unit that keeps it whole."""
    amount = parse_quantity(value) * factor
    if value.endswith(("Ki", "Mi", "Gi", "Ti", "Pi")):
        for unit, size in (("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
            if amount % size == 0 and amount >= size:
                return f"{int(amount // size)}{unit}"
        return str(int(amount))
    return str(int(amount)) if amount == int(amount) else f"{int(amount * 1000)}m"
