"""What every replica policy sees at one tick: the same fields, whoever observes them.

The live autoscaler (`kgpu.controlplane.autoscaler`) fills a `ScalingContext` from the gateway
and the backend, the trace replay (`kgpu.sim.replay`) from its simulated gateway; both hand it
to `kgpu.autoscaling.policy.decide`. So the replay runs exactly the inputs the live policy gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.window import Sample

# Samples are kept at least this long (a research tuning's memory reads them), and longer when a
# service's own window is longer: its stable window or its scale-down stabilization, up to an hour
# (the longest stable window the API accepts, and the HPA's longest stabilization window). The
# scale-down stabilization has no upper bound in the API, so that a service stored with a longer one
# still loads; it remembers an hour, and a service's samples never grow past that.
SAMPLES_KEPT_S = 900.0
MAX_SAMPLES_KEPT_S = 3600.0


@dataclass(frozen=True)
class ScalingContext:
    spec: AutoscalingSpec
    samples: Sequence[Sample]  # oldest first; the last one covers the interval ending now
    now: float
    ready: int  # replicas that serve now
    current: int  # replicas last asked for: ready, starting, or waiting for a GPU
    in_system: float  # requests in flight on replicas plus waiting at the gateway, now
    replica_startup_s: float
    node_startup_s: float = 0.0  # extra lead time when a replica needs a new node
    free_gpus: int | None = None  # replicas that can start without a new node (None: no limit)
    starting: int = 0  # replicas placed on a GPU that do not serve yet (not those waiting for a GPU)


def samples_kept_s(spec: AutoscalingSpec) -> float:
    """How long a service's samples are kept: as long as the longest window its policy reads, up to
    ``MAX_SAMPLES_KEPT_S``."""
    longest = max(spec.stable_window_seconds, spec.scale_down_stabilization_seconds)
    return max(SAMPLES_KEPT_S, min(MAX_SAMPLES_KEPT_S, longest))


def keep_recent(samples, now: float, spec: AutoscalingSpec) -> None:
    """Drop (from the left of a deque) the samples older than ``samples_kept_s(spec)``."""
    kept_s = samples_kept_s(spec)
    while samples and samples[0].time < now - kept_s:
        samples.popleft()
