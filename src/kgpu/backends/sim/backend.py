"""The backend of services on `sim` clusters: replicas placed on virtual nodes, no process started.

A service annotated `kgpu.dev/cluster: <a sim Cluster>` gets its replicas from here instead of
the local backend. Each replica is placed on a Ready virtual node of the cluster's pools
(`SimNodes`), turns Ready after the cluster's `replica-start-delay`, and stays Pending, with a
message naming the resource it lacks, while no node fits it; pending replicas make the pool
grow. Scaling down frees the node's virtual GPUs; a deleted service's replicas go at once.

Simulated replicas serve nothing, so the gateway never routes to them: a request to a service
on a sim cluster is answered 503 without Retry-After (retrying cannot help; see `refusal`).
One loop provisions the pools' nodes and places replicas, every `interval_s` and at once after
a service's replica count or template changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from kgpu.api.models import CLUSTER_ANNOTATION, Cluster, InferenceService, NodePool
from kgpu.backends.base import OneMachineBackend, ReplicaStatus, ready_condition, service_phase
from kgpu.backends.sim.nodes import SimNodes, SimReplica

log = logging.getLogger("kgpu.sim")


class SimBackend(OneMachineBackend):
    def __init__(
        self,
        nodes: SimNodes,
        clusters: Callable[[], list[Cluster]],
        pools: Callable[[], list[NodePool]],
        interval_s: float = 1.0,
        on_event: Callable[[str, str], None] = lambda key, message: None,
    ) -> None:
        self.nodes = nodes
        self._read_clusters = clusters
        self._read_pools = pools
        self.interval_s = interval_s
        self._on_event = on_event
        self._wanted: dict[str, tuple[InferenceService, int]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._reported_pending: dict[str, str] = {}

    # ------------------------------------------------------------ routing

    def refusal(self, key: str) -> str | None:
        """Why the gateway cannot send a request to the service (None: not a sim service)."""
        wanted = self._wanted.get(key)
        if wanted is None:
            return None
        cluster = wanted[0].metadata.annotations.get(CLUSTER_ANNOTATION)
        return (
            f"service {key!r} runs on the simulated cluster {cluster!r}: its replicas are placed on "
            "virtual nodes and run no model, so no request can be served (retrying will not help); "
            "point its kgpu.dev/cluster annotation at a local or kubernetes cluster to serve it"
        )

    # ------------------------------------------------------------ Backend

    async def ensure(self, service: InferenceService, replicas: int, cluster: Cluster | None = None) -> None:
        key = service.key
        before = self._wanted.get(key)
        self._wanted[key] = (service, replicas)
        if before is None or before[1] != replicas or before[0].spec != service.spec:
            self._wake.set()

    async def remove(self, key: str) -> None:
        self._wanted.pop(key, None)
        self._reported_pending.pop(key, None)
        self.nodes.forget(key)
        self._wake.set()

    def placed(self, key: str) -> bool:
        return key in self._wanted

    def replicas(self, key: str | None = None) -> list[ReplicaStatus]:
        now = self.nodes.clock()
        return [_status(r, now) for r in self.nodes.replicas(key) if r.service in self._wanted]

    def services(self) -> list[str]:
        return sorted(self._wanted)

    def log_path(self, replica: str) -> Path:
        raise FileNotFoundError(f"{replica}: a simulated replica writes no log")

    def ready_replicas(self, key: str) -> int | None:
        if key not in self._wanted:
            return None
        now = self.nodes.clock()
        return sum(1 for r in self.nodes.replicas(key) if r.phase(now) == "Ready")

    def pool_report(self, pool: NodePool) -> dict | None:
        """A sim cluster's pool: its virtual nodes (None for a pool on no sim cluster)."""
        return self.nodes.pool_status(pool) if self.nodes.owns(pool) else None

    def node_items(self, pools: list[NodePool]) -> list[dict]:
        return self.nodes.node_items(pools)

    def service_report(self, key: str, desired: int) -> dict | None:
        """The service's status: desired, ready, starting and pending replicas and their nodes."""
        wanted = self._wanted.get(key)
        if wanted is None:
            return None
        now = self.nodes.clock()
        replicas = self.nodes.replicas(key)
        phases = [r.phase(now) for r in replicas]
        ready, pending = phases.count("Ready"), phases.count("Pending")
        phase, reason = service_phase(
            desired, ready, pending=pending > 0, placed_all=len(replicas) >= desired
        )
        if phase == "Pending":
            first = next(r for r in replicas if r.node is None)
            message = f"{pending} replica(s) pending: {first.message}"
        else:
            message = {
                "Placing": "replicas not placed yet",
                "ReplicasStarting": "replicas starting (simulated)",
            }.get(reason, "")
        nodes: dict[str, int] = {}
        for r in replicas:
            if r.node is not None:
                nodes[r.node] = nodes.get(r.node, 0) + 1
        return {
            "phase": phase,
            "cluster": wanted[0].metadata.annotations.get(CLUSTER_ANNOTATION),
            "simulated": True,
            "replicas": desired,
            "readyReplicas": ready,
            "startingReplicas": phases.count("Starting"),
            "pendingReplicas": pending,
            "message": message,
            "nodes": nodes,
            "replicaStatuses": [
                {
                    "name": r.name,
                    "phase": p,
                    "node": r.node or "",
                    **({"message": r.message} if r.message else {}),
                }
                for r, p in zip(replicas, phases, strict=True)
            ],
            "conditions": [ready_condition(phase, reason, message)],
        }

    # ------------------------------------------------------------ the loop

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="sim-nodes")

    async def shutdown(self) -> None:
        """Nothing runs: stop the loop; nodes stay in the database, replicas are placed again on start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sync_once()
            except Exception:  # a bad pass must not stop provisioning for good
                log.exception("sim node pass failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)

    async def sync_once(self) -> dict:
        wanted = dict(self._wanted)  # a snapshot: ensure() runs on the event loop meanwhile

        def sync() -> dict:
            clusters = self._read_clusters()
            if not any(c.spec.backend == "sim" for c in clusters) and not self.nodes.nodes():
                return {"added": [], "removed": []}  # no sim cluster: nothing to read further
            return self.nodes.sync(
                clusters,
                self._read_pools(),
                [service for service, _ in wanted.values()],
                desired=lambda s: wanted[s.key][1],
                now=self.nodes.clock(),
            )

        changed = await asyncio.to_thread(sync)
        for node in changed["added"]:
            log.info("sim node %s added (joining)", node)
        for node in changed["removed"]:
            log.info("sim node %s removed", node)
        for key in wanted:
            replicas = self.nodes.replicas(key)
            pending = [r for r in replicas if r.node is None]
            note = (
                f"{len(pending)} replica(s) pending ({pending[0].name} first): {pending[0].message}"
                if pending
                else ""
            )
            before = self._reported_pending.get(key, "")
            if note != before:
                if note:
                    self._on_event(key, note)
                else:  # the last pending replica found a node: say so, or the pending note stays the last word
                    self._on_event(key, f"all {len(replicas)} replica(s) placed: {_per_node(replicas)}")
                self._reported_pending[key] = note
        return changed


def _per_node(replicas: list[SimReplica]) -> str:
    counts: dict[str, int] = {}
    for r in replicas:
        counts[r.node or ""] = counts.get(r.node or "", 0) + 1
    return ", ".join(f"{node}={n}" for node, n in sorted(counts.items()))


def _status(replica: SimReplica, now: float) -> ReplicaStatus:
    phase = replica.phase(now)
    device = f"sim:{replica.resource}={replica.count}" if replica.resource else "sim:cpu"
    return ReplicaStatus(
        name=replica.name,
        service=replica.service,
        phase=phase,
        node=replica.node or "",
        device=device if replica.node else "",
        started_at=replica.started_at,
        ready_at=replica.ready_at if phase == "Ready" else None,
        message=replica.message if phase == "Pending" else "simulated replica: no process",
        extra={
            "simulated": True,
            "cluster": replica.cluster,
            **(
                {"pool": replica.pool, "resource": replica.resource, "count": replica.count}
                if replica.node
                else {}
            ),
        },
    )
