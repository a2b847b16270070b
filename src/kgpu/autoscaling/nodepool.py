"""Node-pool autoscaler with the cluster autoscaler's semantics, judged by GPU requests.

Scale up: replicas that fit on no existing or already-coming node make a pool whose node
flavor fits them grow; among the pools that can help, the least-waste expander picks the one
leaving the smallest share of the new nodes' GPUs idle (ties: more replicas helped, then name).
Scale down: a node whose GPU requests are below ``utilization_threshold`` of its GPUs for
``unneeded_s`` is removed when its replicas fit on the other nodes of its pool, the pool stays
at or above its minimum, nothing blocks the removal, and no pool grew within ``cooldown_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

UNNEEDED_S = 600.0
COOLDOWN_AFTER_ADD_S = 600.0
UTILIZATION_THRESHOLD = 0.5


@dataclass(frozen=True)
class PendingReplica:
    """A replica that fits on no node: how many whole GPUs it needs and which models it accepts."""

    gpus: int = 1
    gpu_models: tuple[str, ...] = ()  # empty: any model


@dataclass(frozen=True)
class NodeView:
    name: str
    gpus: int
    gpus_requested: int
    removable: bool = True  # False: e.g. a replica with local storage or safe-to-evict "false"


@dataclass(frozen=True)
class PoolView:
    name: str
    gpu_model: str
    gpus_per_node: int
    min_nodes: int
    max_nodes: int
    nodes: tuple[NodeView, ...] = ()
    upcoming_nodes: int = 0  # asked for, not joined yet

    def fits(self, replica: PendingReplica) -> bool:
        model_ok = not replica.gpu_models or self.gpu_model in replica.gpu_models
        return model_ok and replica.gpus <= self.gpus_per_node


@dataclass(frozen=True)
class PoolState:
    unneeded_since: dict[str, float] = field(default_factory=dict)  # node name -> since
    last_scale_up_at: float | None = None


@dataclass(frozen=True)
class NodePoolDecision:
    scale_up: dict[str, int]  # pool -> nodes to add
    remove: dict[str, list[str]]  # pool -> node names to remove
    unschedulable: int  # pending replicas no pool can ever hold
    state: PoolState


def _pack(gpus_needed: list[int], free: list[int], gpus_per_node: int, max_new: int) -> tuple[int, int, int]:
    """First-fit decreasing onto free slots then new nodes; returns (placed, new nodes, idle GPUs on them)."""
    free = list(free)
    new_nodes: list[int] = []
    placed = 0
    for need in sorted(gpus_needed, reverse=True):
        slot = next((i for i, f in enumerate(free) if f >= need), None)
        if slot is not None:
            free[slot] -= need
            placed += 1
            continue
        slot = next((i for i, f in enumerate(new_nodes) if f >= need), None)
        if slot is None and len(new_nodes) < max_new:
            new_nodes.append(gpus_per_node)
            slot = len(new_nodes) - 1
        if slot is not None:
            new_nodes[slot] -= need
            placed += 1
    return placed, len(new_nodes), sum(new_nodes)


def _scale_up(pools: Sequence[PoolView], pending: Sequence[PendingReplica]) -> tuple[dict[str, int], int]:
    fitting = [r for r in pending if any(p.fits(r) for p in pools)]
    unschedulable = len(pending) - len(fitting)
    # Replicas that will land on nodes already coming need no new node (first fit over upcoming capacity).
    upcoming_free = {p.name: [p.gpus_per_node] * p.upcoming_nodes for p in pools}
    still: list[PendingReplica] = []
    for replica in fitting:
        home = next(
            (
                (p.name, i)
                for p in pools
                if p.fits(replica)
                for i, f in enumerate(upcoming_free[p.name])
                if f >= replica.gpus
            ),
            None,
        )
        if home is None:
            still.append(replica)
        else:
            upcoming_free[home[0]][home[1]] -= replica.gpus
    best: tuple[float, int, str, int] | None = None  # (waste, -placed, name, nodes)
    for pool in pools:
        room = pool.max_nodes - len(pool.nodes) - pool.upcoming_nodes
        wanted = [r.gpus for r in still if pool.fits(r)]
        if room <= 0 or not wanted:
            continue
        placed, new_nodes, idle = _pack(wanted, [], pool.gpus_per_node, room)
        if new_nodes == 0:
            continue
        waste = idle / (new_nodes * pool.gpus_per_node)
        candidate = (waste, -placed, pool.name, new_nodes)
        if best is None or candidate[:3] < best[:3]:
            best = candidate
    return ({best[2]: best[3]} if best else {}), unschedulable


def decide_node_pools(
    pools: Sequence[PoolView],
    pending: Sequence[PendingReplica],
    now: float,
    state: PoolState | None = None,
    unneeded_s: float = UNNEEDED_S,
    cooldown_s: float = COOLDOWN_AFTER_ADD_S,
    utilization_threshold: float = UTILIZATION_THRESHOLD,
) -> NodePoolDecision:
    """One cluster-autoscaler scan at ``now``."""
    state = state or PoolState()
    scale_up, unschedulable = _scale_up(pools, pending)
    last_up = now if scale_up else state.last_scale_up_at

    unneeded: dict[str, float] = {}
    for pool in pools:
        for node in pool.nodes:
            if node.gpus_requested < utilization_threshold * node.gpus:
                unneeded[node.name] = state.unneeded_since.get(node.name, now)

    remove: dict[str, list[str]] = {}
    cooling = last_up is not None and now - last_up < cooldown_s
    if not cooling and not pending:
        for pool in pools:
            live = list(pool.nodes)
            moved = 0  # GPUs of removed nodes' replicas that the remaining nodes must take
            for node in sorted(pool.nodes, key=lambda n: (n.gpus_requested, n.name)):
                if len(live) <= pool.min_nodes:
                    break
                since = unneeded.get(node.name)
                if since is None or now - since < unneeded_s or not node.removable:
                    continue
                others = [n for n in live if n.name != node.name]
                if moved + node.gpus_requested > sum(n.gpus - n.gpus_requested for n in others):
                    continue  # its replicas would have nowhere to go
                moved += node.gpus_requested
                live = others
                remove.setdefault(pool.name, []).append(node.name)
    return NodePoolDecision(scale_up, remove, unschedulable, PoolState(unneeded, last_up))
