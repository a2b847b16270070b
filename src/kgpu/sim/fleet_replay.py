"""The trace replay over a fleet of clusters: one service, its replicas split over clusters, outages.

The service model, the gateway queue and the autoscaler are the one-cluster replay's
(`kgpu.sim.replay`): the service's desired replica count comes from the same entry point
(`kgpu.autoscaling.policy.decide`). What changes:

- every autoscaler tick, the desired count is split over the service's clusters by
  `kgpu.multicluster.placement.split_replicas`, the function the live control plane uses, from
  what each cluster offers now (available, price per GPU-hour, replicas it can hold now and once
  its pools grow);
- each cluster has its own node pools (GPUs per node, min/max nodes, node boot delay, price per
  GPU-hour) and node-pool autoscaler (`decide_node_pools`), and its own replica start delay;
- the gateway sends each request to the ready replica with the fewest in flight, in any
  cluster it can reach;
- an outage makes a cluster unreachable from its start to its end: the gateway sends nothing
  there; a request in flight there that had not started streaming (its prompt not yet processed:
  no token sent) goes back to the gateway queue and is retried elsewhere (counted in
  `retried_requests`); one that had started streaming is cut (`cut_streams`: it misses its SLO).
  The control plane's cluster health (`kgpu.multicluster.health.ClusterHealth`, probed every
  `PlatformConfig.cluster_probe_interval_s`) makes the cluster suspect at its first missed
  heartbeat: its replicas stop counting and the split gives its share to the other clusters at
  once (replacements start there), while its replicas are kept (and billed); once it has not
  answered for `failoverAfter` (its grace period) it is declared unavailable and its replicas are
  deleted. When it answers again it is healthy at that probe (within the grace period its replicas
  serve again; after it, new ones start) and the split gives replicas back by the policy;
  a cluster giving replicas away keeps its ready ones until the replacements are ready, so the
  ready count never drops below the desired count because of a move;
- GPU-hours count each replica from its start to its stop, priced at its pool's price per
  GPU-hour (`cost`); `node_cost` prices the node-hours of every pool (what a provider bills
  for whole nodes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.nodepool import NodeView, PendingReplica, PoolState, PoolView, decide_node_pools
from kgpu.controlplane.platform import PlatformConfig
from kgpu.multicluster.health import UNAVAILABLE, ClusterHealth
from kgpu.multicluster.placement import ClusterOffer, split_replicas
from kgpu.sim.azure_trace import TraceRequest
from kgpu.sim.fleet import Fleet, FleetCluster
from kgpu.sim.replay import POLICIES, ReplayLoop, ReplayResult, ServiceModel, _Node, _Replica, default_spec

# The control plane's heartbeat period; its grace period is the fleet's failoverAfter.
PROBE_S = PlatformConfig.cluster_probe_interval_s


@dataclass(frozen=True)
class ClusterUsage:
    name: str
    gpu_hours: float
    node_hours: float
    requests: int  # served here, or cut here by an outage
    slo_attainment_pct: float  # of those
    cost: float  # GPU-hours of the replicas x their pool's price per GPU-hour
    node_cost: float  # node-hours x GPUs per node x price per GPU-hour
    max_replicas: int


@dataclass
class FleetReplayResult:
    replay: ReplayResult
    placement: str
    clusters: list[ClusterUsage]
    cost: float
    node_cost: float
    retried_requests: int
    cut_streams: int
    outages: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # outage, failover, return: when, which cluster

    def to_dict(self, timeline: bool = False) -> dict:
        return {
            **self.replay.to_dict(timeline),
            "placement": self.placement,
            "cost": self.cost,
            "node_cost": self.node_cost,
            "retried_requests": self.retried_requests,
            "cut_streams": self.cut_streams,
            "clusters": [asdict(c) for c in self.clusters],
            "outages": self.outages,
            "events": self.events,
        }


class FleetReplayLoop(ReplayLoop):
    """The replay's loop with the capacity of several clusters; see the module's docstring."""

    def __init__(
        self,
        requests: Sequence[TraceRequest],
        fleet: Fleet,
        policy: str,
        model: ServiceModel,
        spec: AutoscalingSpec | None,
        timeline_every_s: float,
    ) -> None:
        if policy == "static" or policy not in POLICIES:
            raise ValueError(f"a fleet replays an autoscaled policy (kgpu, kpa, hpa), not {policy!r}")
        self.fleet = fleet
        self.clusters: list[FleetCluster] = fleet.allowed()
        self.start_s = [c.replica_start_s(model.replica_startup_s) for c in self.clusters]
        self.pending_in = [0] * len(self.clusters)
        self.pool_states = [PoolState() for _ in self.clusters]
        self.retried = 0
        self.cut_streams = 0
        self.cut_in: list[int] = [0] * len(self.clusters)
        self.last_desired = (0, 0)  # (desired, speculative) of the last decision, split again on a probe
        self.events: list[dict] = []
        index = {c.name: i for i, c in enumerate(self.clusters)}
        # Outages of clusters the service may not use change nothing for it.
        self.outages = [(o.start_s, o.end_s, index[o.cluster]) for o in fleet.outages if o.cluster in index]
        self.starts = sorted((start, c) for start, _, c in self.outages)
        self.played = 0
        # The live control plane's cluster health (heartbeats, grace period), probed on its period.
        self.health = ClusterHealth(fleet.failover_after_s)
        self.next_probe = 0.0 if self.outages else math.inf
        if spec is None:
            capacity = sum(c.max_gpus for c in self.clusters)
            spec = default_spec(policy, model).model_copy(update={"max_replicas": max(1, capacity)})
        # The autoscaler's lead time for a replica that needs a new node: the quickest boot among
        # the pools that can grow (the split sends replicas to clusters with room).
        boots = [p.boot_s for c in self.clusters for p in c.pools if p.max_nodes > p.min_nodes]
        model = replace(model, node_startup_s=min(boots) if boots else model.node_startup_s)
        super().__init__(requests, policy, model, spec, None, timeline_every_s)

    # ---- reachability ---------------------------------------------------------------------
    def _reachable(self, c: int, now: float) -> bool:
        """Whether the cluster answers at ``now`` (the gateway and its backend can reach it)."""
        return not any(start <= now < end for start, end, oc in self.outages if oc == c)

    def _trusted(self, c: int) -> bool:
        """Whether the control plane trusts the cluster (healthy: not suspect, not declared lost)."""
        return self.health.trusted(self.clusters[c].name)

    def _routable(self, r: _Replica, now: float) -> bool:
        return self._reachable(r.cluster, now) and self._trusted(r.cluster)

    def _active(self) -> list[_Replica]:
        """The autoscaler's and the split's replicas: none in a suspect cluster (as the live control
        plane counts none there), though they are kept until it is declared unavailable."""
        return [r for r in super()._active() if self._trusted(r.cluster)]

    # ---- capacity -------------------------------------------------------------------------
    def _start(self, static_replicas: int | None, initial_replicas: int | None) -> None:
        for c, cluster in enumerate(self.clusters):
            for p, pool in enumerate(cluster.pools):
                for _ in range(pool.min_nodes):
                    self.nodes.append(_Node(len(self.nodes), 0.0, 0.0, cluster=c, pool=p))
        assert self.spec is not None
        initial = max(1, self.spec.min_replicas) if initial_replicas is None else initial_replicas
        split = split_replicas(initial, self._offers(0.0), self.fleet.placement.policy)
        self.last_desired = (initial, 0)
        for c, cluster in enumerate(self.clusters):
            # A warm start, as the one-cluster replay's: the nodes the first replicas need are there.
            for _ in range(split.replicas[cluster.name]):
                if self._start_replica_in(c, 0.0, ready_now=True):
                    continue
                pool = self._growable_pool(c)
                if pool is None:
                    break
                self.nodes.append(_Node(len(self.nodes), 0.0, 0.0, cluster=c, pool=pool))
                if not self._start_replica_in(c, 0.0, ready_now=True):
                    break

    def _growable_pool(self, c: int) -> int | None:
        for p, pool in enumerate(self.clusters[c].pools):
            if self._pool_nodes(c, p) < pool.max_nodes:
                return p
        return None

    def _pool_nodes(self, c: int, p: int) -> int:
        return sum(1 for n in self.nodes if n.removed_at is None and n.cluster == c and n.pool == p)

    def _gpus(self, node: _Node) -> int:
        return self.clusters[node.cluster].pools[node.pool].flavor.gpu_count

    def _used(self) -> dict[int, int]:
        used: dict[int, int] = {}
        for r in self._live_replicas():
            used[r.node] = used.get(r.node, 0) + 1
        return used

    def _free_gpu_node_in(self, c: int, now: float) -> _Node | None:
        if not self._reachable(c, now):
            return None
        used = self._used()
        for node in self.nodes:
            if (
                node.cluster == c
                and node.removed_at is None
                and node.ready_at <= now
                and used.get(node.id, 0) < self._gpus(node)
            ):
                return node
        return None

    def _start_replica_in(self, c: int, now: float, ready_now: bool = False) -> bool:
        node = self._free_gpu_node_in(c, now)
        if node is None:
            return False
        ready_at = now if ready_now else now + self.start_s[c]
        self.replicas.append(_Replica(len(self.replicas), node.id, now, ready_at, updated_at=now, cluster=c))
        return True

    def _offers(self, now: float) -> list[ClusterOffer]:
        used = self._used()
        offers = []
        for c, cluster in enumerate(self.clusters):
            current = sum(1 for r in self._active() if r.cluster == c)
            nodes = [n for n in self.nodes if n.cluster == c and n.removed_at is None]
            free_now = sum(max(0, self._gpus(n) - used.get(n.id, 0)) for n in nodes if n.ready_at <= now)
            coming = sum(self._gpus(n) for n in nodes if n.ready_at > now)
            growth = sum(
                (pool.max_nodes - self._pool_nodes(c, p)) * pool.flavor.gpu_count
                for p, pool in enumerate(cluster.pools)
            )
            offers.append(
                ClusterOffer(
                    name=cluster.name,
                    health=self.health.state(cluster.name),
                    local=cluster.local,
                    price_per_gpu_hour=min(p.price for p in cluster.pools),
                    capacity=current + free_now,
                    max_capacity=current + free_now + coming + max(0, growth),
                    current=current,
                )
            )
        return offers

    def _pending_replicas(self) -> int:
        return sum(self.pending_in)

    def _free_gpus(self, now: float) -> int:
        used = self._used()
        free = sum(
            max(0, self._gpus(n) - used.get(n.id, 0))
            for n in self.nodes
            if n.removed_at is None and n.ready_at <= now and self._reachable(n.cluster, now)
        )
        return max(0, free - self._pending_replicas())

    def _scale_to(self, now: float, desired: int, speculative: int = 0) -> None:
        """Split ``desired`` (``speculative`` of them held for load not seen yet) over the clusters
        and move each toward its share (make before break)."""
        self.last_desired = (desired, speculative)
        split = split_replicas(desired, self._offers(now), self.fleet.placement.policy, speculative)
        desired -= split.dropped
        active = self._active()
        changed = False
        have = [
            sum(1 for r in active if r.cluster == c) + self.pending_in[c] for c in range(len(self.clusters))
        ]
        for c, cluster in enumerate(self.clusters):
            for _ in range(split.replicas[cluster.name] - have[c]):
                changed = True
                if not self._start_replica_in(c, now):
                    self.pending_in[c] += 1
        # Ready replicas beyond the desired count may go; those a move needs stay until their
        # replacements are ready.
        removable = max(0, sum(1 for r in active if r.ready_at <= now) - desired)
        for c, cluster in enumerate(self.clusters):
            surplus = have[c] - split.replicas[cluster.name]
            if surplus <= 0:
                continue
            cancelled = min(surplus, self.pending_in[c])
            self.pending_in[c] -= cancelled
            surplus -= cancelled
            changed = changed or cancelled > 0
            mine = [r for r in active if r.cluster == c]
            # Unready replicas go first (as Kubernetes removes them first), then the least busy.
            for r in sorted(mine, key=lambda r: (r.ready_at <= now, r.n(), -r.id)):
                if surplus == 0:
                    break
                if r.ready_at <= now:
                    if removable == 0:
                        break
                    removable -= 1
                self._advance(r, now)
                r.draining = True
                if r.n() == 0:
                    r.stopped_at = now
                surplus -= 1
                changed = True
        if changed:
            self.scale_events += 1

    def _place_pending(self, now: float) -> None:
        for c in range(len(self.clusters)):
            while self.pending_in[c] and self._start_replica_in(c, now):
                self.pending_in[c] -= 1

    def _node_scan(self, now: float) -> None:
        used = self._used()
        for c, cluster in enumerate(self.clusters):
            if not self._reachable(c, now):
                continue  # its API does not answer: nothing is asked of it
            pools = []
            for p, pool in enumerate(cluster.pools):
                nodes = [n for n in self.nodes if n.cluster == c and n.pool == p and n.removed_at is None]
                pools.append(
                    PoolView(
                        name=str(p),
                        gpu_model=pool.flavor.gpu_model or "",
                        gpus_per_node=pool.flavor.gpu_count,
                        min_nodes=pool.min_nodes,
                        max_nodes=pool.max_nodes,
                        nodes=tuple(
                            NodeView(
                                str(n.id),
                                pool.flavor.gpu_count,
                                used.get(n.id, 0),
                                removable=used.get(n.id, 0) == 0,
                            )
                            for n in nodes
                            if n.ready_at <= now
                        ),
                        upcoming_nodes=sum(1 for n in nodes if n.ready_at > now),
                    )
                )
            decision = decide_node_pools(
                pools, [PendingReplica()] * self.pending_in[c], now, self.pool_states[c]
            )
            self.pool_states[c] = decision.state
            for p, count in decision.scale_up.items():
                boot = cluster.pools[int(p)].boot_s
                for _ in range(count):
                    self.nodes.append(_Node(len(self.nodes), now, now + boot, cluster=c, pool=int(p)))
                    self.node_scale_events += 1
            for names in decision.remove.values():
                for name in names:
                    self.nodes[int(name)].removed_at = now
                    self.node_scale_events += 1

    # ---- outages --------------------------------------------------------------------------
    def _next_scenario_event(self, now: float) -> float:
        start = self.starts[self.played][0] if self.played < len(self.starts) else math.inf
        return min(start, self.next_probe)

    def _scenario_event(self, now: float) -> int:
        ended = 0
        while self.played < len(self.starts) and self.starts[self.played][0] <= now:
            _, c = self.starts[self.played]
            self.played += 1
            self._event(now, c, "outage")
            ended += self._cut_off(c, now)
        if now >= self.next_probe:
            self._probe(now)
        return ended

    def _probe(self, now: float) -> None:
        """One heartbeat pass; a transition makes the split again at once, as the control plane does
        (a cluster declared unavailable loses its replicas first)."""
        changed = False
        for c, cluster in enumerate(self.clusters):
            if self._reachable(c, now):
                change = self.health.answered(cluster.name, now)
            else:
                change = self.health.missed(cluster.name, now, "its API does not answer")
            if change is not None:
                changed = True
                self._event(now, c, change.state)
                if change.state == UNAVAILABLE:
                    self._delete_replicas(c, now)
        if changed:
            self._scale_to(now, *self.last_desired)
            self._place_pending(now)
        self.next_probe += PROBE_S
        last_end = max(end for _, end, _ in self.outages)
        if now >= last_end and not self.health.untrusted():
            self.next_probe = math.inf  # nothing left to notice

    def _event(self, now: float, c: int, event: str) -> None:
        self.events.append({"t": round(now, 3), "cluster": self.clusters[c].name, "event": event})

    def _cut_off(self, c: int, now: float) -> int:
        """The cluster stopped answering: requests in flight there not yet streaming are retried, the
        others cut; its replicas stay (unreachable) until it answers or is declared unavailable."""
        cut = 0
        for r in self._live_replicas():
            if r.cluster != c:
                continue
            self._advance(r, now)
            for tag, index in r.heap:
                got = r.served - (tag - self.work[index])
                if got < self.requests[index].context_tokens:
                    # No token sent yet: the gateway retries it elsewhere, arrival and deadline kept.
                    self.queue.push(index, self.requests[index].arrival_s, self.deadlines[index])
                    self.retried += 1
                else:
                    cut += 1
            r.heap = []
            if r.draining:
                r.stopped_at = now  # it was leaving: nothing left for it to finish
        self.cut_streams += cut
        self.cut_in[c] += cut
        return cut

    def _delete_replicas(self, c: int, now: float) -> None:
        """The cluster declared unavailable: its replicas are deleted (the gateway sent them nothing
        since it stopped answering)."""
        for r in self._live_replicas():
            if r.cluster == c:
                r.stopped_at = now

    # ---- output ---------------------------------------------------------------------------
    def _frame(self, now: float) -> None:
        super()._frame(now)
        frame = self.timeline[-1]
        for c, cluster in enumerate(self.clusters):
            frame[f"replicas.{cluster.name}"] = sum(1 for r in self._live_replicas() if r.cluster == c)

    def fleet_result(self, result: ReplayResult, end: float) -> FleetReplayResult:
        served = [0] * len(self.clusters)
        met = [0] * len(self.clusters)
        for index, replica in enumerate(self.done_on):
            if replica is not None:
                c = self.replicas[replica].cluster
                served[c] += 1
                met[c] += self._met_slo(index)
        usages = []
        for c, cluster in enumerate(self.clusters):
            gpu_s = cost = 0.0
            spans = []
            for r in self.replicas:
                if r.cluster != c:
                    continue
                stop = r.stopped_at if r.stopped_at is not None else end
                gpu_s += stop - r.started_at
                cost += (stop - r.started_at) / 3600.0 * cluster.pools[self.nodes[r.node].pool].price
                spans += [(r.started_at, 1), (stop, -1)]
            node_s = node_cost = 0.0
            for n in self.nodes:
                if n.cluster != c:
                    continue
                hours = ((n.removed_at if n.removed_at is not None else end) - n.asked_at) / 3600.0
                node_s += hours * 3600.0
                pool = cluster.pools[n.pool]
                node_cost += hours * pool.flavor.gpu_count * pool.price
            requests = served[c] + self.cut_in[c]
            usages.append(
                ClusterUsage(
                    name=cluster.name,
                    gpu_hours=gpu_s / 3600.0,
                    node_hours=node_s / 3600.0,
                    requests=requests,
                    slo_attainment_pct=100.0 * met[c] / requests if requests else 100.0,
                    cost=cost,
                    node_cost=node_cost,
                    max_replicas=_peak(spans),
                )
            )
        return FleetReplayResult(
            replay=result,
            placement=self.fleet.placement.policy,
            clusters=usages,
            cost=sum(u.cost for u in usages),
            node_cost=sum(u.node_cost for u in usages),
            retried_requests=self.retried,
            cut_streams=self.cut_streams,
            outages=[
                {"cluster": self.clusters[c].name, "start_s": start, "end_s": end_s}
                for start, end_s, c in self.outages
            ],
            events=self.events,
        )


def _peak(spans: list[tuple[float, int]]) -> int:
    """The most intervals open at once (a stop sorts before a start at the same instant)."""
    peak = live = 0
    for _, step in sorted(spans):
        live += step
        peak = max(peak, live)
    return peak


def replay_fleet(
    requests: Sequence[TraceRequest],
    fleet: Fleet,
    policy: str = "kgpu",
    model: ServiceModel = ServiceModel(),
    spec: AutoscalingSpec | None = None,
    timeline_every_s: float = 10.0,
) -> FleetReplayResult:
    """Replay ``requests`` on ``fleet`` under one autoscaling policy; see the module's docstring."""
    if not requests:
        raise ValueError("the trace has no requests")
    loop = FleetReplayLoop(requests, fleet, policy, model, spec, timeline_every_s)
    result = loop.run()
    return loop.fleet_result(result, result.duration_s)
