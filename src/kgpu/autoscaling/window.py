"""Metric samples and window averages shared by the replica autoscalers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)  # a service keeps up to an hour of them
class Sample:
    """What the gateway observed for one service over the interval ending at ``time``.

    ``concurrency`` is the time-averaged number of requests in the system (in flight on
    replicas plus waiting in the gateway queue), as Knative's activator and queue-proxy
    count it. ``in_flight`` is the part running on replicas, ``queue`` the part waiting.
    ``arrived_work`` is the work of the interval's arrivals as the gateway can know it when they
    arrive (their prompts plus the mean answer of the requests completed so far: the length of an
    answer still being generated is unknown to any live policy); ``completed_work`` is the work
    (any unit, e.g. tokens) finished in the interval and
    ``busy_replica_seconds`` the replica-seconds that had at least one request: their ratio is
    the measured per-replica throughput.
    """

    time: float
    concurrency: float
    in_flight: float = 0.0
    queue: float = 0.0
    ready_replicas: int = 0
    arrivals: int = 0
    arrived_work: float = 0.0
    completed_work: float = 0.0
    busy_replica_seconds: float = 0.0


def in_window(samples: Iterable[Sample], now: float, seconds: float) -> list[Sample]:
    """Samples whose time lies in (now - seconds, now]."""
    start = now - seconds
    return [s for s in samples if start < s.time <= now]


def window_average(
    samples: Iterable[Sample], now: float, seconds: float, field: str = "concurrency"
) -> float:
    """Mean of one field over the samples in the window; 0 when the window is empty."""
    chosen = in_window(samples, now, seconds)
    if not chosen:
        return 0.0
    return sum(getattr(s, field) for s in chosen) / len(chosen)
