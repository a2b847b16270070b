"""Leader election for the operator: several replicas, one reconciles (a coordination.k8s.io/v1 Lease).

Uses the official client's ``kubernetes.leaderelection`` with its LeaseLock: a candidate reads the
Lease, creates it when absent, and takes it over only after the holder has not renewed it for a
whole lease duration; the leader renews it every retry period. A leader that cannot renew within the
renew deadline stops reconciling and the process exits, so the pod restarts as a follower (a leader
never keeps working on a lease it may have lost).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger("kgpu.operator.leader")

LEASE_NAME = "kgpu-operator"


def default_identity() -> str:
    """The pod's name (downward API) or the host name, made unique per process."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass
class ElectionSettings:
    namespace: str
    lease_name: str = LEASE_NAME
    identity: str = field(default_factory=default_identity)
    # client-go's defaults: a leader that misses renewals for 15 s is replaced.
    lease_duration_s: int = 15
    renew_deadline_s: int = 10
    retry_period_s: int = 2

    def __post_init__(self) -> None:
        # The official client exits the process on these; say which setting is wrong instead.
        if self.retry_period_s < 1:
            raise ValueError(f"retry period: must be >= 1 s, got {self.retry_period_s}")
        if self.renew_deadline_s <= 1.2 * self.retry_period_s:
            raise ValueError("renew deadline: must be more than 1.2 x the retry period")
        if self.lease_duration_s <= self.renew_deadline_s:
            raise ValueError("lease duration: must be longer than the renew deadline")


def elector(
    settings: ElectionSettings,
    on_started: Callable[[], None],
    on_stopped: Callable[[], None],
    coordination_api: Any | None = None,
) -> leaderelection.LeaderElection:
    """The official client's LeaderElection on a LeaseLock (with `coordination_api` in place of the
    default CoordinationV1Api, for another configuration or for tests)."""
    lock = LeaseLock(settings.lease_name, settings.namespace, settings.identity)
    if coordination_api is not None:
        lock.api_instance = coordination_api
    config = electionconfig.Config(
        lock,
        lease_duration=settings.lease_duration_s,
        renew_deadline=settings.renew_deadline_s,
        retry_period=settings.retry_period_s,
        onstarted_leading=on_started,
        onstopped_leading=on_stopped,
    )
    return leaderelection.LeaderElection(config)


def run_as_leader(
    work: Callable[[threading.Event], None], settings: ElectionSettings, coordination_api: Any | None = None
) -> None:
    """Wait until this candidate holds the Lease, run `work(stop)` while it does, and return once the
    Lease is lost (after setting `stop`, which `work` must honour)."""
    stop = threading.Event()

    def stopped() -> None:
        log.warning("%s lost the lease %s/%s", settings.identity, settings.namespace, settings.lease_name)
        stop.set()

    def started() -> None:
        log.info("%s leads (lease %s/%s)", settings.identity, settings.namespace, settings.lease_name)
        work(stop)

    log.info("%s waits for the lease %s/%s", settings.identity, settings.namespace, settings.lease_name)
    elector(settings, started, stopped, coordination_api).run()
    stop.set()
