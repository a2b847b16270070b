"""Discrete-event replay of a request trace against replica autoscalers, on a virtual clock.

Service model (fixed, so results compare across policies):

- a request's work is ``ContextTokens + 10 * GeneratedTokens`` units;
- a replica holds at most 16 requests in flight; with n in flight each progresses at
  ``1000 * min(1, 8 / n)`` units/s (batching: 8 at full speed, then they share);
- requests beyond that wait in the gateway queue and go to the ready replica with the fewest in
  flight; a request that waited ``queue_timeout_s`` fails. ``container_concurrency`` (the service's
  ``spec.containerConcurrency``) makes the gateway hold requests at a lower count per replica;
  0 leaves the replica's own limit. The queue is kgpu's gateway queue
  (``kgpu.gateway.deadline_queue``): each client sends its deadline, arrival + the SLO computed
  from what it knows before the answer (its context tokens, not the tokens it will get back),
  and the earliest deadline goes first, late requests last; ``queue="fifo"`` replays a plain
  first-in-first-out queue instead;
- one replica per GPU; a replica serves 20 s after it starts; a node (8 GPUs) joins 120 s
  after it is asked for; the pool has 0-4 nodes and starts with one;
- a request meets its SLO when arrival-to-completion latency <= 2 s + 2 * work / 1000 s;
- GPU-hours count each replica from its start to its stop, node-hours each node from the
  moment it is asked for to its removal; everything stops when the last request is done.

Processor sharing is advanced analytically: every request on a replica progresses at the same
rate, so each replica keeps a virtual "service received per request" clock and a heap of
finish tags; the next completion is known exactly and nothing is stepped in small increments.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.context import ScalingContext, keep_recent
from kgpu.autoscaling.nodepool import NodeView, PendingReplica, PoolState, PoolView, decide_node_pools
from kgpu.autoscaling.policy import REPLICA_POLICIES, ScalingDecision, decide
from kgpu.autoscaling.predictive import predictive_decide
from kgpu.autoscaling.window import Sample
from kgpu.gateway.deadline_queue import DeadlineQueue
from kgpu.sim.azure_trace import TraceRequest
from kgpu.sim.hold_tuning import HoldTuning, TunedSizing

POLICIES = ("kgpu", "kpa", "hpa", "static")
VARIANTS = ("kgpu-lean", "kgpu-min4")  # other settings of a policy, replayed by the benchmark
NODE_SCAN_S = 10.0


@dataclass(frozen=True)
class ServiceModel:
    max_in_flight: int = 16
    full_speed_batch: int = 8
    units_per_s: float = 1000.0
    generated_token_weight: float = 10.0
    replica_startup_s: float = 20.0
    node_startup_s: float = 120.0
    gpus_per_node: int = 8
    min_nodes: int = 0
    max_nodes: int = 4
    initial_nodes: int = 1
    slo_base_s: float = 2.0
    slo_factor: float = 2.0
    queue_timeout_s: float = 600.0
    queue: Literal["deadline", "fifo"] = "deadline"
    container_concurrency: int = 0  # the gateway's limit per replica; 0: the replica's max_in_flight

    def __post_init__(self) -> None:
        if self.container_concurrency < 0:
            raise ValueError(f"container_concurrency must be >= 0, got {self.container_concurrency}")

    @property
    def per_replica_limit(self) -> int:
        """Requests the gateway lets one replica hold at once."""
        if self.container_concurrency:
            return min(self.container_concurrency, self.max_in_flight)
        return self.max_in_flight

    def work(self, request: TraceRequest) -> float:
        return request.context_tokens + self.generated_token_weight * request.generated_tokens

    def rate(self, in_flight: int) -> float:
        """Units/s each of ``in_flight`` requests on one replica receives."""
        return self.units_per_s * min(1.0, self.full_speed_batch / in_flight)

    def slo_s(self, work: float) -> float:
        return self.slo_base_s + self.slo_factor * work / self.units_per_s

    def client_deadline(self, request: TraceRequest) -> float:
        """The deadline a client sends with its request: it knows its prompt, not the answer's length."""
        if self.queue == "fifo":
            # No deadline sent: the gateway uses its hold timeout, the same for everyone (arrival order).
            return request.arrival_s + self.queue_timeout_s
        return request.arrival_s + self.slo_s(request.context_tokens)


def default_spec(policy: str, model: ServiceModel = ServiceModel()) -> AutoscalingSpec:
    """The settings each policy replays with: Knative's and Kubernetes' defaults, kgpu's own."""
    max_replicas = model.max_nodes * model.gpus_per_node
    common = {"max_replicas": max_replicas, "target": float(model.max_in_flight)}
    # Knative's target follows containerConcurrency when it is set; the HPA's metric is the in-flight
    # count a replica reports, which the limit caps, so its target follows it too.
    limited = {**common, "target": float(model.per_replica_limit)}
    if policy == "kpa":
        return AutoscalingSpec(policy="kpa", min_replicas=0, **limited)
    if policy == "hpa":
        return AutoscalingSpec(policy="hpa", min_replicas=1, **limited)
    if policy == "kgpu":
        # kgpu's target counts what waits at the gateway too, so it stays the replica's capacity
        # whatever the gateway's limit.
        # SLO first: a floor of five and a 5-minute memory of bursts at the full in-flight cap.
        # The trace's bursts follow minutes of silence and peak within seconds, far inside a
        # replica's start-up, so only capacity held from the previous burst can serve them.
        return AutoscalingSpec(
            policy="kgpu",
            min_replicas=5,
            target_utilization=1.0,
            scale_down_stabilization_seconds=300.0,
            scale_to_zero_idle_seconds=600.0,
            **common,
        )
    if policy == "kgpu-lean":
        # GPU-hours first: a floor of four and a 30-second memory at the full in-flight cap.
        return AutoscalingSpec(
            policy="kgpu",
            min_replicas=4,
            target_utilization=1.0,
            scale_down_stabilization_seconds=30.0,
            scale_to_zero_idle_seconds=600.0,
            **common,
        )
    if policy == "kgpu-min4":
        # kgpu's settings with a floor of four.
        return default_spec("kgpu", model).model_copy(update={"min_replicas": 4})
    raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)}")


TICK_S = {"kgpu": 2.0, "kpa": 2.0, "hpa": 15.0}


@dataclass
class _Replica:
    id: int
    node: int
    started_at: float
    ready_at: float
    served: float = 0.0  # service each in-flight request has received since the replica started
    updated_at: float = 0.0
    heap: list[tuple[float, int]] = field(default_factory=list)  # (finish tag, request index)
    draining: bool = False
    stopped_at: float | None = None
    cluster: int = 0  # the fleet replay's cluster index (kgpu.sim.fleet_replay); 0 otherwise

    def n(self) -> int:
        return len(self.heap)


@dataclass
class _Node:
    id: int
    asked_at: float
    ready_at: float
    removed_at: float | None = None
    cluster: int = 0  # the fleet replay's cluster index
    pool: int = 0  # the fleet replay's pool index within its cluster


@dataclass
class ReplayResult:
    policy: str
    requests: int
    completed: int
    failed_requests: int
    slo_met: int
    slo_attainment_pct: float
    gpu_hours: float
    node_hours: float
    p50_latency_s: float
    p99_latency_s: float
    max_latency_s: float
    scale_events: int
    node_scale_events: int
    max_replicas: int
    duration_s: float
    stopped_before_ready: int = 0  # replicas stopped while still starting (their start-up wasted)
    replicas: int | None = None  # static only: the constant replica count
    timeline: list[dict[str, float]] = field(default_factory=list)
    missed_arrivals_s: list[float] = field(
        default_factory=list
    )  # arrival time of each request that missed its SLO
    # Why each of those missed (a key of MISS_CAUSES), in the same order.
    missed_causes: list[str] = field(default_factory=list)

    def to_dict(self, timeline: bool = False) -> dict:
        data = asdict(self)
        if not timeline:
            data.pop("timeline")
            data.pop("missed_arrivals_s")
            data.pop("missed_causes")
        if self.replicas is None:
            data.pop("replicas")
        return data


# Why a request missed its SLO, from the replica that served it.
MISS_CAUSES = {
    "queueing": "served by a replica that already served when it arrived: too few were held for the load",
    "cold-start": "served by a replica that became ready after it arrived: it waited for a start-up",
    "waiting-for-node": "served by a replica on a node that joined after it arrived",
    "failed": "never served: it waited the gateway's hold timeout",
}


def _percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, math.ceil(pct / 100.0 * len(ordered)) - 1)
    return ordered[rank]


class ReplayLoop:
    """The replay's event loop (`replay` runs it); subclass it to drive the replicas some other way
    (bench/replay_oracle.py reads them from a schedule)."""

    def __init__(
        self,
        requests: Sequence[TraceRequest],
        policy: str,
        model: ServiceModel,
        spec: AutoscalingSpec | None,
        static_replicas: int | None,
        timeline_every_s: float,
        initial_replicas: int | None = None,
        tuning: HoldTuning | None = None,
    ) -> None:
        if policy not in POLICIES + VARIANTS:
            raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)}")
        self.label = policy
        self.spec = None if policy == "static" else (spec or default_spec(policy, model))
        policy = "static" if self.spec is None else self.spec.policy
        self.requests = sorted(requests, key=lambda r: r.arrival_s)
        self.policy = policy
        self.model = model
        self.work = [model.work(r) for r in self.requests]
        self.done_at: list[float | None] = [None] * len(self.requests)
        self.done_on: list[int | None] = [None] * len(self.requests)  # the replica that served it
        self.failed = 0
        self.queue: DeadlineQueue[int] = DeadlineQueue()
        self.replicas: list[_Replica] = []
        self.nodes: list[_Node] = []
        self.pending = 0  # replicas wanted that have no GPU yet
        self.scale_events = 0
        self.node_scale_events = 0
        self.max_replicas = 0
        self.samples: deque[Sample] = deque()
        self.timeline: list[dict[str, float]] = []
        self.timeline_every_s = timeline_every_s
        # Integrals over the current autoscaler interval, for time-averaged samples.
        self.acc_since = 0.0
        self.acc_in_flight = 0.0
        self.acc_queue = 0.0
        self.acc_busy = 0.0
        self.acc_arrivals = 0
        self.acc_arrived_work = 0.0
        self.acc_completed_work = 0.0
        self.policy_state: object = None  # what the policy handed back on its last tick
        self.tuning = tuning
        self.deadlines = [model.client_deadline(r) for r in self.requests]
        self.generated_done = 0.0  # generated tokens of the completed requests (known once done)
        self.completed_count = 0
        self.pool_state = PoolState()
        self._start(static_replicas, initial_replicas)

    # ---- capacity ---------------------------------------------------------------------------
    def _start(self, static_replicas: int | None, initial_replicas: int | None) -> None:
        model = self.model
        if self.policy == "static":
            count = static_replicas if static_replicas is not None else 1
            if not 1 <= count <= model.max_nodes * model.gpus_per_node:
                raise ValueError(
                    f"static replicas must be between 1 and {model.max_nodes * model.gpus_per_node}, got {count}"
                )
            for _ in range(math.ceil(count / model.gpus_per_node)):
                self.nodes.append(_Node(len(self.nodes), 0.0, 0.0))
            for _ in range(count):
                self._start_replica(0.0, ready_now=True)
            return
        for _ in range(model.initial_nodes):
            self.nodes.append(_Node(len(self.nodes), 0.0, 0.0))
        assert self.spec is not None
        # Knative's and Kubernetes' initial scale is one replica unless told otherwise.
        initial = max(1, self.spec.min_replicas) if initial_replicas is None else initial_replicas
        for _ in range(initial):
            self._start_replica(0.0, ready_now=True)

    def _live_replicas(self) -> list[_Replica]:
        return [r for r in self.replicas if r.stopped_at is None]

    def _free_gpu_node(self, now: float) -> _Node | None:
        used: dict[int, int] = {}
        for r in self._live_replicas():
            used[r.node] = used.get(r.node, 0) + 1
        for node in self.nodes:
            if (
                node.removed_at is None
                and node.ready_at <= now
                and used.get(node.id, 0) < self.model.gpus_per_node
            ):
                return node
        return None

    def _start_replica(self, now: float, ready_now: bool = False) -> bool:
        node = self._free_gpu_node(now)
        if node is None:
            return False
        ready_at = now if ready_now else now + self.model.replica_startup_s
        self.replicas.append(_Replica(len(self.replicas), node.id, now, ready_at, updated_at=now))
        return True

    def _active(self) -> list[_Replica]:
        """Replicas counted by the autoscaler: starting or ready, not draining."""
        return [r for r in self.replicas if r.stopped_at is None and not r.draining]

    def _scale_to(self, now: float, desired: int, speculative: int = 0) -> None:
        """Move to ``desired`` replicas; on one cluster the ``speculative`` ones are placed like the
        others (the policy holds them on free GPUs only; the fleet replay splits them apart)."""
        active = self._active()
        current = len(active) + self.pending
        if desired == current:
            return
        self.scale_events += 1
        if desired > current:
            for _ in range(desired - current):
                if not self._start_replica(now):
                    self.pending += 1
            return
        surplus = current - desired
        cancelled = min(surplus, self.pending)
        self.pending -= cancelled
        surplus -= cancelled
        # Unready replicas go first (as Kubernetes removes them first), then the least busy.
        for r in sorted(active, key=lambda r: (r.ready_at <= now, r.n(), -r.id))[:surplus]:
            self._advance(r, now)
            r.draining = True
            if r.n() == 0:
                r.stopped_at = now

    def _pending_replicas(self) -> int:
        """Replicas wanted that have no GPU yet (the fleet replay counts them per cluster)."""
        return self.pending

    def _place_pending(self, now: float) -> None:
        while self.pending and self._start_replica(now):
            self.pending -= 1

    # ---- processor sharing ------------------------------------------------------------------
    def _advance(self, r: _Replica, now: float) -> None:
        if r.heap and now > r.updated_at:
            r.served += self.model.rate(r.n()) * (now - r.updated_at)
        r.updated_at = now

    def _next_completion(self, r: _Replica) -> float:
        if not r.heap:
            return math.inf
        return r.updated_at + max(0.0, r.heap[0][0] - r.served) / self.model.rate(r.n())

    def _dispatch(self, now: float) -> None:
        while self.queue:
            ready = [
                r
                for r in self.replicas
                if r.stopped_at is None
                and not r.draining
                and r.ready_at <= now
                and r.n() < self.model.per_replica_limit
                and self._routable(r, now)
            ]
            if not ready:
                return
            r = min(ready, key=lambda r: (r.n(), r.id))
            index = self.queue.pop(now)
            self._advance(r, now)
            heapq.heappush(r.heap, (r.served + self.work[index], index))

    def _routable(self, r: _Replica, now: float) -> bool:
        """Whether the gateway may send to a ready replica (the fleet replay: not to a cluster it
        cannot reach or does not trust); every one here."""
        return True

    def _accumulate(self, until: float, last: float) -> None:
        span = until - last
        if span <= 0:
            return
        in_flight = sum(r.n() for r in self.replicas if r.stopped_at is None)
        busy = sum(1 for r in self.replicas if r.stopped_at is None and r.heap)
        self.acc_in_flight += in_flight * span
        self.acc_queue += len(self.queue) * span
        self.acc_busy += busy * span

    # ---- autoscalers ------------------------------------------------------------------------
    def _sample(self, now: float) -> Sample:
        span = max(1e-9, now - self.acc_since)
        ready = sum(1 for r in self._active() if r.ready_at <= now)
        sample = Sample(
            time=now,
            concurrency=(self.acc_in_flight + self.acc_queue) / span,
            in_flight=self.acc_in_flight / span,
            queue=self.acc_queue / span,
            ready_replicas=ready,
            arrivals=self.acc_arrivals,
            arrived_work=self.acc_arrived_work,
            completed_work=self.acc_completed_work,
            busy_replica_seconds=self.acc_busy,
        )
        self.acc_since = now
        self.acc_in_flight = self.acc_queue = self.acc_busy = 0.0
        self.acc_arrivals = 0
        self.acc_arrived_work = self.acc_completed_work = 0.0
        self.samples.append(sample)
        assert self.spec is not None  # only autoscaled policies sample
        keep_recent(self.samples, now, self.spec)
        return sample

    def _tick(self, now: float) -> None:
        """The live autoscaler's tick: the same context, through the same entry point."""
        self._sample(now)
        assert self.spec is not None
        active = self._active()
        ctx = ScalingContext(
            spec=self.spec,
            samples=self.samples,
            now=now,
            ready=sum(1 for r in active if r.ready_at <= now),
            current=len(active) + self._pending_replicas(),
            in_system=sum(r.n() for r in active) + len(self.queue),
            replica_startup_s=self.model.replica_startup_s,
            node_startup_s=self.model.node_startup_s,
            free_gpus=self._free_gpus(now),
            starting=sum(1 for r in active if r.ready_at > now),
        )
        decision = decide(ctx, self.policy_state, self._policies(now, active))
        self.policy_state = decision.state
        self._scale_to(now, decision.desired, decision.speculative)

    def _policies(self, now: float, active: list[_Replica]):
        """The live policies; with a research tuning, kgpu's sizing replaced by it."""
        if self.tuning is None:
            return REPLICA_POLICIES
        tuning = self.tuning
        pending = self._pending_work(now, active) if tuning.reactive == "deadline" else ()

        def tuned(ctx: ScalingContext, state: object) -> ScalingDecision:
            decision = predictive_decide(ctx, state, TunedSizing(tuning, pending))
            return ScalingDecision(decision.desired, decision.state, speculative=decision.speculative)

        return {**REPLICA_POLICIES, "kgpu": tuned}

    def _pending_work(self, now: float, active: list[_Replica]) -> list[tuple[float, float]]:
        """(deadline, estimated work left) of each request waiting or in flight, as the gateway knows it.

        The gateway knows each request's deadline and prompt, not the length of its answer: the
        estimate is the prompt plus the mean answer of the requests completed so far; in flight,
        less the service the replica reports (at least a tenth of the estimate is left).
        """
        model = self.model
        estimate = self._estimated_work
        pending = [(deadline, estimate(index)) for index, deadline in self.queue.waiting()]
        for r in active:
            served = r.served + (model.rate(r.n()) * (now - r.updated_at) if r.heap else 0.0)
            for tag, index in r.heap:
                got = served - (tag - self.work[index])
                pending.append((self.deadlines[index], max(0.1 * estimate(index), estimate(index) - got)))
        return pending

    def _estimated_work(self, index: int) -> float:
        """A request's work as the gateway knows it before the answer: its prompt plus the mean answer
        of the requests completed so far (never its own answer's length, which only the trace knows)."""
        mean_generated = self.generated_done / self.completed_count if self.completed_count else 0.0
        return self.requests[index].context_tokens + self.model.generated_token_weight * mean_generated

    def _free_gpus(self, now: float) -> int:
        live = [n for n in self.nodes if n.removed_at is None and n.ready_at <= now]
        used = len(self._live_replicas())
        return max(0, len(live) * self.model.gpus_per_node - used - self.pending)

    def _node_scan(self, now: float) -> None:
        model = self.model
        per_node: dict[int, int] = {}
        for r in self._live_replicas():
            per_node[r.node] = per_node.get(r.node, 0) + 1
        ready_nodes = [n for n in self.nodes if n.removed_at is None and n.ready_at <= now]
        upcoming = sum(1 for n in self.nodes if n.removed_at is None and n.ready_at > now)
        pool = PoolView(
            name="gpu",
            gpu_model="sim",
            gpus_per_node=model.gpus_per_node,
            min_nodes=model.min_nodes,
            max_nodes=model.max_nodes,
            nodes=tuple(
                NodeView(
                    str(n.id),
                    model.gpus_per_node,
                    per_node.get(n.id, 0),
                    removable=per_node.get(n.id, 0) == 0,
                )
                for n in ready_nodes
            ),
            upcoming_nodes=upcoming,
        )
        decision = decide_node_pools([pool], [PendingReplica()] * self.pending, now, self.pool_state)
        self.pool_state = decision.state
        for _ in range(decision.scale_up.get("gpu", 0)):
            self.nodes.append(_Node(len(self.nodes), now, now + model.node_startup_s))
            self.node_scale_events += 1
        for name in decision.remove.get("gpu", []):
            self.nodes[int(name)].removed_at = now
            self.node_scale_events += 1

    # ---- main loop --------------------------------------------------------------------------
    def run(self) -> ReplayResult:
        model = self.model
        now = 0.0
        next_arrival = 0
        total = len(self.requests)
        remaining = total
        tick_s = TICK_S.get(self.policy)
        next_tick = tick_s if tick_s else math.inf
        next_scan = NODE_SCAN_S if tick_s else math.inf
        next_frame = 0.0
        while remaining:
            arrival = self.requests[next_arrival].arrival_s if next_arrival < total else math.inf
            completion, who = math.inf, None
            for r in self.replicas:
                if r.heap:
                    t = self._next_completion(r)
                    if t < completion:
                        completion, who = t, r
            readies = [r.ready_at for r in self.replicas if r.stopped_at is None and r.ready_at > now]
            joins = [n.ready_at for n in self.nodes if n.removed_at is None and n.ready_at > now]
            oldest = self.queue.oldest_arrival()
            timeout = math.inf if oldest is None else oldest + model.queue_timeout_s
            scenario = self._next_scenario_event(now)
            t = min(
                arrival, completion, next_tick, next_scan, next_frame, timeout, scenario, *readies, *joins
            )
            self._accumulate(t, now)
            now = t
            if completion == now and who is not None:
                self._advance(who, now)
                _, index = heapq.heappop(who.heap)
                self.done_at[index] = now
                self.done_on[index] = who.id
                self.acc_completed_work += self.work[index]
                self.generated_done += self.requests[index].generated_tokens
                self.completed_count += 1
                remaining -= 1
                if who.draining and not who.heap:
                    who.stopped_at = now
            expired = self._expire(now)
            self.failed += expired
            remaining -= expired
            if scenario <= now:
                remaining -= self._scenario_event(now)
            if joins and min(joins) <= now:
                self._place_pending(now)
            while next_arrival < total and self.requests[next_arrival].arrival_s <= now:
                request = self.requests[next_arrival]
                self.queue.push(next_arrival, request.arrival_s, self.deadlines[next_arrival])
                self.acc_arrivals += 1
                self.acc_arrived_work += self._estimated_work(next_arrival)
                next_arrival += 1
            if now >= next_tick:
                self._tick(now)
                next_tick += tick_s or math.inf
            if now >= next_scan:
                self._node_scan(now)
                self._place_pending(now)
                next_scan += NODE_SCAN_S
            self._dispatch(now)
            if now >= next_frame:
                self._frame(now)
                next_frame += self.timeline_every_s
            self.max_replicas = max(self.max_replicas, len(self._live_replicas()))
        self._frame(now)
        return self._result(now)

    def _next_scenario_event(self, now: float) -> float:
        """When the next event of a scenario the subclass plays happens (outages); never here."""
        return math.inf

    def _scenario_event(self, now: float) -> int:
        """Play the scenario's events due at ``now``; how many requests they ended for good."""
        return 0

    def _expire(self, now: float) -> int:
        """Fail the requests that have waited the hold timeout; how many.

        The same test as the loop's next timeout event (``arrival + timeout <= now``): with
        ``expire(now - timeout)`` rounding can keep a request whose timeout event is due, and the
        loop would wake at that same instant again and again without advancing.
        """
        expired = 0
        while (
            oldest := self.queue.oldest_arrival()
        ) is not None and oldest + self.model.queue_timeout_s <= now:
            expired += len(self.queue.expire(oldest))
        return expired

    def _frame(self, now: float) -> None:
        live = self._live_replicas()
        self.timeline.append(
            {
                "t": round(now, 3),
                "replicas": len(live),
                "ready": sum(1 for r in live if r.ready_at <= now),
                "in_flight": sum(r.n() for r in live),
                "queue": len(self.queue),
                "nodes": sum(1 for n in self.nodes if n.removed_at is None),
            }
        )

    def _met_slo(self, index: int) -> bool:
        done = self.done_at[index]
        if done is None:
            return False
        return done - self.requests[index].arrival_s <= self.model.slo_s(self.work[index]) + 1e-9

    def _miss_cause(self, index: int) -> str:
        """Why request ``index`` missed its SLO (a key of MISS_CAUSES)."""
        served_by = self.done_on[index]
        if served_by is None:
            return "failed"
        replica, arrival = self.replicas[served_by], self.requests[index].arrival_s
        if replica.ready_at <= arrival:
            return "queueing"
        return "waiting-for-node" if self.nodes[replica.node].ready_at > arrival else "cold-start"

    def _result(self, end: float) -> ReplayResult:
        latencies, met, missed, causes = [], 0, [], []
        for index, done in enumerate(self.done_at):
            arrival = self.requests[index].arrival_s
            if done is not None:
                latencies.append(done - arrival)
                if self._met_slo(index):
                    met += 1
                    continue
            missed.append(arrival)
            causes.append(self._miss_cause(index))
        gpu_s = sum((r.stopped_at if r.stopped_at is not None else end) - r.started_at for r in self.replicas)
        node_s = sum((n.removed_at if n.removed_at is not None else end) - n.asked_at for n in self.nodes)
        total = len(self.requests)
        return ReplayResult(
            policy=self.label,
            requests=total,
            completed=len(latencies),
            failed_requests=self.failed,
            slo_met=met,
            slo_attainment_pct=100.0 * met / total if total else 100.0,
            gpu_hours=gpu_s / 3600.0,
            node_hours=node_s / 3600.0,
            p50_latency_s=_percentile(latencies, 50),
            p99_latency_s=_percentile(latencies, 99),
            max_latency_s=max(latencies, default=0.0),
            scale_events=self.scale_events,
            node_scale_events=self.node_scale_events,
            max_replicas=self.max_replicas,
            duration_s=end,
            stopped_before_ready=sum(
                1 for r in self.replicas if r.stopped_at is not None and r.stopped_at < r.ready_at
            ),
            timeline=self.timeline,
            missed_arrivals_s=missed,
            missed_causes=causes,
        )


def replay(
    requests: Sequence[TraceRequest],
    policy: str,
    model: ServiceModel = ServiceModel(),
    spec: AutoscalingSpec | None = None,
    static_replicas: int | None = None,
    timeline_every_s: float = 10.0,
    initial_replicas: int | None = None,
    tuning: HoldTuning | None = None,
) -> ReplayResult:
    """Replay ``requests`` under one policy; ``static`` needs ``static_replicas`` (see find_static).

    Autoscaled policies start with ``initial_replicas`` ready replicas on the first node
    (default: one, or ``minReplicas`` when higher). ``tuning`` replaces kgpu's default burst
    memory (``kgpu.autoscaling.predictive.HoldTuning``).
    """
    if not requests:
        raise ValueError("the trace has no requests")
    result = ReplayLoop(
        requests, policy, model, spec, static_replicas, timeline_every_s, initial_replicas, tuning
    ).run()
    if policy == "static":
        result.replicas = static_replicas
    return result


def find_static(
    requests: Sequence[TraceRequest],
    model: ServiceModel = ServiceModel(),
    slo_target_pct: float = 99.0,
    timeline_every_s: float = 10.0,
) -> ReplayResult:
    """The smallest constant replica count whose replay reaches ``slo_target_pct`` (binary search).

    Attainment grows with the replica count (more replicas never slow a request down under
    least-loaded dispatch), so the search is a binary search over 1..max GPUs. When even the
    full pool misses the target, the full pool's result is returned.
    """
    low, high = 1, model.max_nodes * model.gpus_per_node
    best = replay(requests, "static", model, static_replicas=high, timeline_every_s=timeline_every_s)
    if best.slo_attainment_pct < slo_target_pct:
        return best
    while low < high:
        mid = (low + high) // 2
        result = replay(requests, "static", model, static_replicas=mid, timeline_every_s=timeline_every_s)
        if result.slo_attainment_pct >= slo_target_pct:
            best, high = result, mid
        else:
            low = mid + 1
    return best
