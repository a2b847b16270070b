"""Replica autoscaling on the embedded platform: sample the gateway, run the service's policy, set the scale.

The decision functions in `kgpu.autoscaling` are pure; this module feeds them what the gateway sees
(requests in flight on replicas plus requests held waiting for one; for `metric: sequences`, the
generation replicas' running and waiting sequences instead of requests in flight) once per tick, as the
same `ScalingContext` the trace replay builds, through the one entry point `kgpu.autoscaling.policy.decide`;
it keeps each service's samples and policy state, and publishes the replica count the reconciler
converges to.
Like Knative's activator, a request that arrives while its service is at zero wakes the service at
once instead of waiting for the next tick.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.api.models import InferenceService
from kgpu.autoscaling.context import ScalingContext, keep_recent
from kgpu.autoscaling.policy import decide
from kgpu.autoscaling.window import Sample

log = logging.getLogger("kgpu.autoscaler")

# Until a replica of the service has started once, assume this start-up time (seconds).
DEFAULT_STARTUP_S = 10.0


@dataclass
class Observation:
    """What the gateway and backend say about one service right now."""

    in_flight: int  # requests sent to replicas and not yet answered
    held: int  # requests waiting at the gateway for a ready replica
    ready: int  # ready replicas
    startup_s: float | None = None  # measured replica start-up time, when known
    # Running plus waiting sequences over the service's generation replicas (their /metrics); None when
    # no replica reports them (embedding services, or none scraped yet).
    sequences: float | None = None
    node_startup_s: float = 0.0  # extra lead time when a replica needs a new node (none here)
    free_gpus: int | None = None  # replicas that can start without a new node (None: no limit known)
    starting: int = 0  # replicas in phase Starting: placed, not ready yet

    def sample(self, spec: AutoscalingSpec, now: float) -> Sample:
        """This observation as a sample in the unit of `spec.target` (see `load_of`)."""
        return Sample(
            time=now,
            concurrency=load_of(spec, self),
            in_flight=on_replicas(spec, self),
            queue=self.held,
            ready_replicas=self.ready,
        )


def on_replicas(spec: AutoscalingSpec, seen: Observation) -> float:
    """The load the replicas hold, in the unit of `spec.target`: requests in flight, or for
    `metric: sequences` their running plus waiting sequences when they report them."""
    if spec.metric == "sequences" and seen.sequences is not None:
        return float(seen.sequences)
    return float(seen.in_flight)


def load_of(spec: AutoscalingSpec, seen: Observation) -> float:
    """The service's load in the unit of `spec.target`; requests held at the gateway count either way
    (each is one more sequence once admitted)."""
    return on_replicas(spec, seen) + seen.held


@dataclass
class _Scaling:
    spec: AutoscalingSpec
    desired: int
    samples: deque[Sample] = field(default_factory=deque)
    state: object | None = None
    concurrency: float = 0.0
    panicking: bool = False
    speculative: int = 0  # of `desired`, held for load not seen yet (ScalingDecision.speculative)


class ReplicaAutoscaler:
    def __init__(self, on_event: Callable[[str, str], None], on_change: Callable[[], None]) -> None:
        self._on_event = on_event
        self._on_change = on_change
        self._services: dict[str, _Scaling] = {}

    def desired(self, service: InferenceService) -> int:
        """The replica count the reconciler should converge to for this service."""
        spec = service.spec.autoscaling
        if spec is None:
            return service.spec.replicas
        return self._entry(service.key, spec, service.spec.replicas).desired

    def speculative(self, key: str) -> int:
        """How many of the service's desired replicas its policy holds for load not seen yet."""
        entry = self._services.get(key)
        return 0 if entry is None else min(entry.speculative, entry.desired)

    def status(self, service: InferenceService) -> dict | None:
        entry = self._services.get(service.key)
        if service.spec.autoscaling is None or entry is None:
            return None
        return {
            "policy": entry.spec.policy,
            "desiredReplicas": entry.desired,
            "concurrency": round(entry.concurrency, 2),
            "panicking": entry.panicking,
        }

    def wake(self, key: str) -> None:
        """A request is waiting and the service has no replica: start one now (the activator's job)."""
        entry = self._services.get(key)
        if entry is not None and entry.desired == 0 and entry.spec.max_replicas > 0:
            entry.desired, entry.speculative = 1, 0  # a request waits: that replica is for load seen
            self._on_event(key, "scaling from zero: a request is waiting")
            self._on_change()

    def tick(
        self, services: Iterable[InferenceService], observe: Callable[[str], Observation], now: float
    ) -> None:
        changed = False
        live = set()
        for service in services:
            spec = service.spec.autoscaling
            if spec is None:
                continue
            key = service.key
            live.add(key)
            seen = observe(key)
            changed |= self.scale(service, seen.sample(spec, now), seen)
        for key in set(self._services) - live:
            del self._services[key]
        if changed:
            self._on_change()

    def _entry(self, key: str, spec: AutoscalingSpec, replicas: int) -> _Scaling:
        entry = self._services.get(key)
        if entry is None:
            entry = self._services[key] = _Scaling(spec=spec, desired=spec.clamp(replicas))
        elif entry.spec != spec:
            # New settings: keep the history, restart the policy's own state, respect the new bounds.
            entry.spec, entry.state, entry.desired = spec, None, spec.clamp(entry.desired)
            entry.speculative = 0
        return entry

    def scale(self, service: InferenceService, sample: Sample, seen: Observation) -> bool:
        """One tick of one service: remember `sample` (ending at `sample.time`), run its policy and
        take the replica count it decides; whether that count changed."""
        spec = service.spec.autoscaling
        assert spec is not None
        entry = self._entry(service.key, spec, service.spec.replicas)
        entry.samples.append(sample)
        keep_recent(entry.samples, sample.time, spec)
        ctx = ScalingContext(
            spec=spec,
            samples=entry.samples,
            now=sample.time,
            ready=seen.ready,
            current=entry.desired,
            in_system=load_of(spec, seen),
            replica_startup_s=seen.startup_s or DEFAULT_STARTUP_S,
            node_startup_s=seen.node_startup_s,
            free_gpus=seen.free_gpus,
            starting=seen.starting,
        )
        decision = decide(ctx, entry.state)
        entry.state, entry.panicking = decision.state, decision.panicking
        entry.speculative = decision.speculative
        entry.concurrency = sample.concurrency
        if decision.desired == entry.desired:
            return False
        self._on_event(
            service.key,
            f"autoscaler ({spec.policy}) scales {entry.desired} -> {decision.desired} replicas "
            f"(concurrency {sample.concurrency:.0f}, ready {seen.ready})",
        )
        entry.desired = decision.desired
        return True


# A replica counts as starting (and is kept from a scale-down) for at most this many start-up times:
# one that hangs while loading must not hold the service's scale, down to zero included, for good.
STARTING_KEPT_STARTUPS = 2.0


def starting_replicas(
    phases_started: Iterable[tuple[str, float | None]], now: float, startup_s: float | None
) -> int:
    """Replicas in phase Starting that started within STARTING_KEPT_STARTUPS start-up times of ``now``
    (the measured start-up time, or DEFAULT_STARTUP_S before any replica became ready)."""
    within = STARTING_KEPT_STARTUPS * (startup_s or DEFAULT_STARTUP_S)
    return sum(
        1
        for phase, started in phases_started
        if phase == "Starting" and started is not None and now - started <= within
    )


def measured_startup_s(started_ready: Iterable[tuple[float | None, float | None]]) -> float | None:
    """Mean start-to-ready time of replicas that became ready, or None if none has yet."""
    took = [ready - started for started, ready in started_ready if started and ready and ready >= started]
    return math.fsum(took) / len(took) if took else None
