"""Virtual nodes of `sim` clusters: node pools that get nodes without machines behind them.

A NodePool whose annotation `kgpu.dev/cluster` names a Cluster of backend `sim` in its
project gets virtual nodes `<pool>-<n>`: `minNodes` of them when it is created, each
advertising what one node of the pool's flavor offers (`pool_status`'s allocatable per
node). A new node joins (turns Ready) after a delay: the cluster's `autoscaler` flag
`node-join-delay` (`90s`, `5m`), else a default per flavor kind (bare metal boots slower).

Services annotated with the same cluster get simulated replicas `<service>-<i>` (see
`kgpu.backends.sim.backend`): each is placed on a Ready node by the scheduling framework with
the local backend's policy (`kgpu.backends.sim.placement`) and keeps that node while it is there; it turns Ready after the cluster's
`replica-start-delay` (default 5s). Replicas that fit nowhere stay Pending, with a message
naming the resource they lack, and make the node-pool autoscaler
(`kgpu.autoscaling.nodepool.decide_node_pools`) add nodes, and nodes left underused are
removed, with the cluster-autoscaler flags `scale-down-unneeded-time`,
`scale-down-delay-after-add` and `scale-down-utilization-threshold` of the Cluster.
Nodes are rows in the control plane's database, so they survive a restart.

Only placement is simulated: no process is started for a sim service's replicas.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Float, String, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from kgpu.api.errors import FieldError, invalid
from kgpu.api.models import CLUSTER_ANNOTATION, Cluster, InferenceService, NodePool, object_key, replica_index
from kgpu.api.quantity import parse_quantity
from kgpu.autoscaling.nodepool import (
    COOLDOWN_AFTER_ADD_S,
    UNNEEDED_S,
    UTILIZATION_THRESHOLD,
    NodeView,
    PendingReplica,
    PoolState,
    PoolView,
    decide_node_pools,
)
from kgpu.backends.pools import gpu_resources_per_node, pool_status
from kgpu.backends.sim.placement import ClusterPlacer, NodeUse, request_of
from kgpu.scheduling.snapshot import Placement

# The annotation that places a pool or a service on a Cluster of its project (the same one the
# Kubernetes clusters use).
JOIN_DELAY_S = {"vm": 60.0, "bare-metal": 300.0}
JOIN_DELAY_FLAG = "node-join-delay"
START_DELAY_FLAG = "replica-start-delay"
REPLICA_START_DELAY_S = 5.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds of a cluster-autoscaler style duration: `90s`, `10m`, `1h`, `30` (seconds)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f'"{text}" is not a duration such as 90s, 10m or 1h')
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class _Base(DeclarativeBase):
    pass


class _SimNodeRow(_Base):
    __tablename__ = "sim_nodes"

    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    pool: Mapped[str] = mapped_column(String(253), primary_key=True)
    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    cluster: Mapped[str] = mapped_column(String(253))
    created_at: Mapped[float] = mapped_column(Float)
    ready_at: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True)
class SimNode:
    namespace: str
    pool: str
    name: str
    cluster: str
    created_at: float
    ready_at: float

    def ready(self, now: float) -> bool:
        return now >= self.ready_at


@dataclass(frozen=True)
class SimReplica:
    """One simulated replica: where it was placed (None: Pending, and why) and when it turns Ready."""

    name: str
    service: str  # "<namespace>/<name>"
    cluster: str
    template: str
    resource: str | None = None
    count: int = 0
    pool: str | None = None
    node: str | None = None
    started_at: float | None = None
    ready_at: float | None = None
    message: str = ""
    # What the scheduling framework reserved for it (kept while it stays on its node).
    placements: tuple[Placement, ...] = ()

    def phase(self, now: float) -> str:
        if self.node is None:
            return "Pending"
        return "Ready" if self.ready_at is not None and now >= self.ready_at else "Starting"


def _threshold(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(f'"{text}" is not a fraction between 0 and 1')
    return value


# The cluster-autoscaler style flags a sim cluster reads, and how.
SIM_FLAGS: dict[str, Callable[[str], float]] = {
    JOIN_DELAY_FLAG: parse_duration,
    START_DELAY_FLAG: parse_duration,
    "scale-down-unneeded-time": parse_duration,
    "scale-down-delay-after-add": parse_duration,
    "scale-down-utilization-threshold": _threshold,
}


def sim_flag_errors(resource: object) -> list[FieldError]:
    """Apply-time check of a sim Cluster's flags, so that none is silently replaced by its default."""
    if not isinstance(resource, Cluster) or resource.spec.backend != "sim":
        return []
    errors = []
    for name, parse in SIM_FLAGS.items():
        value = resource.spec.autoscaler.get(name)
        if value is None:
            continue
        try:
            problem = None if math.isfinite(parse(value)) else "is too large"
        except ValueError as exc:
            problem = str(exc)
        if problem is not None:
            errors.append(invalid(f"spec.autoscaler[{name}]", value, problem))
    return errors


def _flag(cluster: Cluster, name: str, default: float) -> float:
    """The flag read as sim_flag_errors checks it at apply time."""
    value = cluster.spec.autoscaler.get(name)
    if value is None:
        return default
    try:
        return SIM_FLAGS[name](value)
    except ValueError:
        return default  # a Cluster stored before flags were checked at apply time


def sim_cluster_of(resource: NodePool | InferenceService, clusters: list[Cluster]) -> Cluster | None:
    named = resource.metadata.annotations.get(CLUSTER_ANNOTATION)
    if not named:
        return None
    return next(
        (
            c
            for c in clusters
            if c.metadata.name == named
            and c.metadata.namespace == resource.metadata.namespace
            and c.spec.backend == "sim"
        ),
        None,
    )


class SimNodes:
    """Provisions the virtual nodes of sim clusters' pools and scales them with pending replicas."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        _Base.metadata.create_all(engine)
        self._session = sessionmaker(engine, expire_on_commit=False)
        self.clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, PoolState] = {}  # cluster key -> autoscaler memory
        self._placement: dict[tuple[str, str, str], NodeUse] = {}  # (namespace, pool, node) -> last placement
        self._pending: dict[str, int] = {}  # service key -> replicas that fit on no Ready node
        self._replicas: dict[str, tuple[SimReplica, ...]] = {}  # service key -> its replicas, by index
        self._pools: set[tuple[str, str]] = set()  # (namespace, pool) on sim clusters, as of the last sync

    # ------------------------------------------------------------ reading

    def nodes(self, namespace: str | None = None, pool: str | None = None) -> list[SimNode]:
        with self._session() as session:
            query = select(_SimNodeRow)
            if namespace is not None:
                query = query.filter_by(namespace=namespace)
            if pool is not None:
                query = query.filter_by(pool=pool)
            rows = session.scalars(query.order_by(_SimNodeRow.namespace, _SimNodeRow.pool)).all()
        nodes = [SimNode(r.namespace, r.pool, r.name, r.cluster, r.created_at, r.ready_at) for r in rows]
        return sorted(nodes, key=lambda n: (n.namespace, n.pool, replica_index(n.name)))

    def owns(self, pool: NodePool) -> bool:
        return (pool.metadata.namespace, pool.metadata.name) in self._pools

    def pending(self, service: str) -> int:
        return self._pending.get(service, 0)

    def replicas(self, service: str | None = None) -> list[SimReplica]:
        """Replicas of one service (or all), as of the last sync."""
        if service is not None:
            return list(self._replicas.get(service, ()))
        return [r for key in sorted(self._replicas) for r in self._replicas[key]]

    def forget(self, service: str) -> None:
        """Drop a deleted service's replicas now; the next sync frees their resources on the nodes."""
        replicas = dict(self._replicas)
        replicas.pop(service, None)
        self._replicas = replicas
        self._pending.pop(service, None)

    def pool_status(self, pool: NodePool, now: float | None = None) -> dict:
        """`pool_status` with the pool's actual virtual nodes: totals count Ready nodes only."""
        now = self.clock() if now is None else now
        nodes = self.nodes(pool.metadata.namespace, pool.metadata.name)
        ready = [n for n in nodes if n.ready(now)]
        status = pool_status(pool, nodes=len(ready))
        status["nodes"] = len(nodes)
        status["readyNodes"] = len(ready)
        status["nodeList"] = [self._node_summary(pool, n, now) for n in nodes]
        return status

    def _node_summary(self, pool: NodePool, node: SimNode, now: float) -> dict:
        placed = self._placement.get((node.namespace, node.pool, node.name))
        summary = {
            "name": node.name,
            "status": "Ready" if node.ready(now) else "Joining",
            "allocatable": pool_status(pool, nodes=1)["allocatablePerNode"],
            "replicas": placed.replicas if placed else 0,
            "allocated": dict(placed.used) if placed else {},
        }
        if not node.ready(now):
            summary["readyInS"] = round(node.ready_at - now, 1)
        return summary

    def node_items(self, pools: list[NodePool], now: float | None = None) -> list[dict]:
        """Virtual nodes shaped like the local node of `/api/v1/nodes` (CLI and console read both)."""
        now = self.clock() if now is None else now
        by_key = {(p.metadata.namespace, p.metadata.name): p for p in pools}
        items = []
        for node in self.nodes():
            pool = by_key.get((node.namespace, node.pool))
            if pool is None:
                continue
            flavor = pool.spec.flavor
            gpu_memory = 0
            if flavor.gpu_model:
                from kgpu.gpu.catalog import get_model

                gpu_memory = get_model(flavor.gpu_model).memory_gib * 1024
            placed = self._placement.get((node.namespace, node.pool, node.name))
            mig = pool.spec.sharing.mig_layout or {}
            gpus = [
                {
                    "index": i,
                    "uuid": f"SIM-{node.namespace}-{node.name}-{i}",
                    "name": flavor.gpu_model,
                    "catalog_model": flavor.gpu_model,
                    "memory_total_mib": gpu_memory,
                    "memory_used_mib": 0,
                    "utilization_gpu_pct": None,
                    "mig_enabled": bool(mig),
                    "mig_devices": [
                        {"profile": profile, "uuid": f"SIM-MIG-{node.name}-{i}-{profile}-{k}"}
                        for profile, count in mig.items()
                        for k in range(count)
                    ],
                }
                for i in range(flavor.gpu_count)
            ]
            items.append(
                {
                    "hostname": node.name,
                    "namespace": node.namespace,
                    "cluster": node.cluster,
                    "pool": node.pool,
                    "backend": "sim",
                    "status": "Ready" if node.ready(now) else "Joining",
                    "cpu_count": int(parse_quantity(flavor.cpu)) if flavor.cpu is not None else 0,
                    "memory_mib": int(parse_quantity(flavor.memory) / 2**20)
                    if flavor.memory is not None
                    else 0,
                    "driver_version": None,
                    "gpus": gpus,
                    "note": f"virtual node of pool {node.namespace}/{node.pool} ({flavor.name or 'custom flavor'})",
                    "replicas": placed.replicas if placed else 0,
                    "allocatable": pool_status(pool, nodes=1)["allocatablePerNode"],
                    "allocated": dict(placed.used) if placed else {},
                }
            )
        return items

    # ------------------------------------------------------------ reconciling

    def sync(
        self,
        clusters: list[Cluster],
        pools: list[NodePool],
        services: list[InferenceService],
        desired: Callable[[InferenceService], int] = lambda s: s.spec.replicas,
        now: float | None = None,
    ) -> dict:
        """One pass: nodes within [minNodes, maxNodes], placement, then one autoscaler scan per cluster.

        Returns what changed: {"added": [...], "removed": [...]} (node names as namespace/name).
        """
        now = self.clock() if now is None else now
        with self._lock:
            return self._sync(clusters, pools, services, desired, now)

    def _sync(self, clusters, pools, services, desired, now) -> dict:
        sim_pools = [(p, c) for p in pools if (c := sim_cluster_of(p, clusters)) is not None]
        self._pools = {(p.metadata.namespace, p.metadata.name) for p, _ in sim_pools}
        added: list[str] = []
        removed: list[str] = []
        existing = self.nodes()
        # Nodes whose pool is gone, or no longer on a sim cluster, go.
        orphans = [n for n in existing if (n.namespace, n.pool) not in self._pools]
        if orphans:
            self._delete(orphans)
            removed += [object_key(n.namespace, n.name) for n in orphans]

        by_pool: dict[tuple[str, str], list[SimNode]] = {}
        for node in existing:
            by_pool.setdefault((node.namespace, node.pool), []).append(node)
        for pool, cluster in sim_pools:
            key = (pool.metadata.namespace, pool.metadata.name)
            nodes = by_pool.get(key, [])
            spec = pool.spec
            if len(nodes) < spec.min_nodes:
                added += self._add(pool, cluster, nodes, spec.min_nodes - len(nodes), now)
            elif len(nodes) > spec.max_nodes:
                extra = sorted(nodes, key=lambda n: replica_index(n.name))[spec.max_nodes :]
                self._delete(extra)
                removed += [object_key(n.namespace, n.name) for n in extra]

        # Placement of sim services' replicas, then one autoscaler scan per cluster.
        nodes = self.nodes()
        placement, pending_by_cluster = self._place(sim_pools, nodes, clusters, services, desired, now)
        self._placement = placement
        pool_by_key = {p.key: (p, c) for p, c in sim_pools}
        for cluster_key, (cluster, pending) in pending_by_cluster.items():
            mine = [(p, c) for p, c in sim_pools if c.key == cluster_key]
            up, down = self._views(mine, nodes, placement, now)
            wanted = [_pending_replica(need, up) for need in pending]
            previous = self._states.get(cluster_key, PoolState())
            flags = {
                "unneeded_s": _flag(cluster, "scale-down-unneeded-time", UNNEEDED_S),
                "cooldown_s": _flag(cluster, "scale-down-delay-after-add", COOLDOWN_AFTER_ADD_S),
                "utilization_threshold": _flag(
                    cluster, "scale-down-utilization-threshold", UTILIZATION_THRESHOLD
                ),
            }
            # Scale-up judged per (pool, GPU resource); scale-down per pool over all its GPU resources.
            grow = decide_node_pools(
                up, wanted, now, PoolState(last_scale_up_at=previous.last_scale_up_at), **flags
            )
            shrink = decide_node_pools(
                down,
                wanted,
                now,
                PoolState(previous.unneeded_since, grow.state.last_scale_up_at),
                **flags,
            )
            self._states[cluster_key] = PoolState(shrink.state.unneeded_since, grow.state.last_scale_up_at)
            for view_name, count in grow.scale_up.items():
                pool, owner = pool_by_key[view_name.split("|", 1)[0]]
                added += self._add(pool, owner, _nodes_of(nodes, pool), count, now)
            for pool_key, names in shrink.remove.items():
                gone = [n for n in _nodes_of(nodes, pool_by_key[pool_key][0]) if n.name in names]
                self._delete(gone)
                removed += [object_key(n.namespace, n.name) for n in gone]
        return {"added": added, "removed": removed}

    def _place(self, sim_pools, nodes, clusters, services, desired, now):
        """Place every sim service's replicas on the Ready nodes of its cluster's pools.

        A replica placed earlier keeps its node while the node is there and its template did not
        change (all of those are taken first, so a new replica never displaces a running one);
        the others go where the scheduling framework puts them (`ClusterPlacer`: the local
        backend's policy over the cluster's Ready nodes). Replicas are `<service>-<i>` for i < desired, so
        scaling down removes the highest indices and frees what they held.
        """
        pool_of = {(p.metadata.namespace, p.metadata.name): p for p, _ in sim_pools}
        placement = {
            (n.namespace, n.pool, n.name): NodeUse(
                n, pool_of[(n.namespace, n.pool)], gpu_resources_per_node(pool_of[(n.namespace, n.pool)])
            )
            for n in nodes
            if (n.namespace, n.pool) in pool_of
        }
        placers: dict[str, ClusterPlacer | None] = {}

        def ready_in(cluster: Cluster) -> list[NodeUse]:
            return [
                use
                for use in placement.values()
                if use.node.ready(now)
                and use.node.namespace == cluster.metadata.namespace
                and use.node.cluster == cluster.metadata.name
            ]

        def placer_of(cluster: Cluster) -> ClusterPlacer | None:
            if cluster.key not in placers:
                ready = ready_in(cluster)
                placers[cluster.key] = ClusterPlacer(ready) if ready else None
            return placers[cluster.key]

        pending: dict[str, tuple[Cluster, list[_Need]]] = {c.key: (c, []) for _, c in sim_pools}
        plans = []
        for service in sorted(services, key=lambda s: (s.metadata.namespace, s.metadata.name)):
            cluster = sim_cluster_of(service, clusters)
            if cluster is None:
                continue
            pending.setdefault(cluster.key, (cluster, []))
            gpu = service.gpu_request()
            resource, count = gpu if gpu else (None, 0)
            accepted = frozenset(service.spec.gpu_models)
            request, units = request_of(resource, count, service.spec.gpu_models)
            candidates = [
                use for use in ready_in(cluster) if not accepted or use.pool.spec.flavor.gpu_model in accepted
            ]
            key = service.key
            template = service.template_hash()
            previous = {r.name: r for r in self._replicas.get(key, ())}
            replicas: list[SimReplica | None] = []
            for index in range(desired(service)):
                before = previous.get(f"{service.metadata.name}-{index}")
                home = (
                    placement.get((cluster.metadata.namespace, before.pool, before.node))
                    if before is not None and before.node is not None and before.template == template
                    else None
                )
                kept = None
                if home is not None and home in candidates and home.room(resource, count):
                    kept = placer_of(cluster).keep(home, before.placements, request)
                if kept is not None:
                    home.take(resource, count)
                replicas.append(before if kept is not None else None)
            plans.append(
                _Plan(
                    service,
                    cluster,
                    resource,
                    count,
                    accepted,
                    template,
                    request,
                    units,
                    candidates,
                    replicas,
                )
            )

        counts: dict[str, int] = {}
        placed_replicas: dict[str, tuple[SimReplica, ...]] = {}
        for plan in plans:
            service, cluster, resource, count, replicas = (
                plan.service, plan.cluster, plan.resource, plan.count, plan.replicas
            )  # fmt: skip
            key = service.key
            start_delay = _flag(cluster, START_DELAY_FLAG, REPLICA_START_DELAY_S)
            placer = placer_of(cluster)
            # Every unplaced replica of a service asks for the same thing and free room only
            # shrinks: once one fits nowhere, the rest are pending for the same reason.
            blocked: str | None = None
            for index, replica in enumerate(replicas):
                if replica is not None:
                    continue
                name = f"{service.metadata.name}-{index}"
                common = {
                    "name": name,
                    "service": key,
                    "cluster": cluster.metadata.name,
                    "template": plan.template,
                    "resource": resource,
                    "count": count,
                }
                if blocked is None:
                    placed = (
                        placer.place(plan.request, plan.units, resource, count, plan.candidates)
                        if placer is not None and plan.candidates
                        else None
                    )
                    if placed is not None:
                        home, placements = placed
                        home.take(resource, count)
                        replicas[index] = SimReplica(
                            **common,
                            pool=home.node.pool,
                            node=home.node.name,
                            started_at=now,
                            ready_at=now + start_delay,
                            placements=placements,
                        )
                        continue
                    blocked = _unschedulable(cluster, resource, count, plan.accepted, sim_pools, nodes, now)
                replicas[index] = SimReplica(**common, message=blocked)
                counts[key] = counts.get(key, 0) + 1
                if resource is not None:  # the node-pool autoscaler is judged by GPU requests
                    pending[cluster.key][1].append(_Need(resource, count, plan.accepted))
            placed_replicas[key] = tuple(r for r in replicas if r is not None)
        self._pending = counts
        self._replicas = placed_replicas
        return placement, pending

    @staticmethod
    def _views(mine, nodes, placement, now) -> tuple[list[PoolView], list[PoolView]]:
        up: list[PoolView] = []
        down: list[PoolView] = []
        for pool, _ in mine:
            pool_key = pool.key
            offers = gpu_resources_per_node(pool)
            pool_nodes = _nodes_of(nodes, pool)
            ready = [n for n in pool_nodes if n.ready(now)]
            joining = len(pool_nodes) - len(ready)
            for resource, per_node in offers.items():
                up.append(
                    PoolView(
                        name=f"{pool_key}|{resource}",
                        gpu_model=f"{resource}|{pool.spec.flavor.gpu_model}",
                        gpus_per_node=per_node,
                        min_nodes=pool.spec.min_nodes,
                        max_nodes=pool.spec.max_nodes,
                        # Full: this view only decides growth.
                        nodes=tuple(NodeView(n.name, per_node, per_node) for n in ready),
                        upcoming_nodes=joining,
                    )
                )
            units = sum(offers.values())
            node_views = []
            for n in pool_nodes:
                placed = placement[(n.namespace, n.pool, n.name)]
                used = sum(placed.used.values())
                # A joining node is not judged yet; one holding CPU-only replicas is kept.
                removable = n.ready(now) and (used > 0 or placed.replicas == 0)
                node_views.append(NodeView(n.name, units, used, removable=removable))
            down.append(
                PoolView(
                    name=pool_key,
                    gpu_model=str(pool.spec.flavor.gpu_model),
                    gpus_per_node=units,
                    min_nodes=pool.spec.min_nodes,
                    max_nodes=pool.spec.max_nodes,
                    nodes=tuple(node_views),
                )
            )
        return up, down

    # ------------------------------------------------------------ writing

    def _add(
        self, pool: NodePool, cluster: Cluster, current: list[SimNode], count: int, now: float
    ) -> list[str]:
        delay = _flag(cluster, JOIN_DELAY_FLAG, JOIN_DELAY_S.get(pool.spec.flavor.kind or "vm", 60.0))
        taken = {replica_index(n.name) for n in current}
        names = []
        index = 0
        while len(names) < count:
            if index not in taken:
                names.append(f"{pool.metadata.name}-{index}")
            index += 1
        with self._session.begin() as session:
            for name in names:
                session.add(
                    _SimNodeRow(
                        namespace=pool.metadata.namespace,
                        pool=pool.metadata.name,
                        name=name,
                        cluster=cluster.metadata.name,
                        created_at=now,
                        ready_at=now + delay,
                    )
                )
        return [object_key(pool.metadata.namespace, n) for n in names]

    def _delete(self, nodes: list[SimNode]) -> None:
        if not nodes:
            return
        with self._session.begin() as session:
            for n in nodes:
                session.execute(
                    delete(_SimNodeRow).filter_by(namespace=n.namespace, pool=n.pool, name=n.name)
                )


@dataclass
class _Plan:
    """One sim service during a pass: what its replicas ask for, where they may go, which are kept."""

    service: InferenceService
    cluster: Cluster
    resource: str | None
    count: int
    accepted: frozenset[str]
    template: str
    request: object  # PodRequest
    units: int
    candidates: list[NodeUse]
    replicas: list[SimReplica | None]


@dataclass(frozen=True)
class _Need:
    """A replica that fits on no Ready node: the GPU resource, how many, and the models it accepts."""

    resource: str
    count: int
    gpu_models: frozenset[str]


def _pending_replica(need: _Need, views: list[PoolView]) -> PendingReplica:
    models = tuple(
        v.gpu_model
        for v in views
        if v.gpu_model.split("|", 1)[0] == need.resource
        and (not need.gpu_models or v.gpu_model.split("|", 1)[1] in need.gpu_models)
    )
    # No pool offers it: a model name no view has, so it counts as unschedulable.
    return PendingReplica(gpus=need.count, gpu_models=models or ("none|none",))


def _unschedulable(cluster, resource, count, accepted, sim_pools, nodes, now) -> str:
    """Why a replica fits on no node of the cluster, naming what it lacks (like the scheduler's message)."""
    name = cluster.metadata.name
    what = f"the {count} free {resource} a replica needs" if resource is not None else "room for a replica"
    models = f" ({', '.join(sorted(accepted))})" if accepted else ""
    offering = [
        p
        for p, c in sim_pools
        if c.key == cluster.key
        and (resource is None or gpu_resources_per_node(p).get(resource, 0) >= count)
        and (not accepted or p.spec.flavor.gpu_model in accepted)
    ]
    if not offering:
        return (
            f"Unschedulable: no node pool of sim cluster {name} offers {count} {resource}{models} per node"
            if resource is not None
            else f"Unschedulable: sim cluster {name} has no node pool"
        )
    own = [n for p in offering for n in _nodes_of(nodes, p)]
    ready = sum(1 for n in own if n.ready(now))
    message = (
        f"Insufficient {resource or 'nodes'}: 0/{ready} Ready nodes of sim cluster {name} have {what}{models}"
    )
    joining = len(own) - ready
    if joining:
        return f"{message}; {joining} node(s) joining"
    if all(len(_nodes_of(nodes, p)) >= p.spec.max_nodes for p in offering):
        pools = ", ".join(p.metadata.name for p in offering)
        return f"{message}; node pool(s) {pools} at maxNodes"
    return f"{message}; waiting for the node pool to grow"


def _nodes_of(nodes: list[SimNode], pool: NodePool) -> list[SimNode]:
    return [n for n in nodes if (n.namespace, n.pool) == (pool.metadata.namespace, pool.metadata.name)]
