"""The status the API returns for each resource, computed here and nowhere else in the control plane.

A service's status is what its backend reports for the service as a whole (a Kubernetes
cluster's operator, a sim cluster) or else what its replicas say, plus what the control plane
adds: the endpoint, recent events and the autoscaler's view. A pool's status is what its
backend observes (nodes found, virtual nodes) or else what its flavor offers at `minNodes`.
Reading a status also sets the service's ready/desired gauges on `/metrics`.
"""

from __future__ import annotations

from collections.abc import Callable

from kgpu.api.models import Cluster, InferenceService, NodePool
from kgpu.backends.base import ready_condition, service_phase
from kgpu.backends.pools import pool_status
from kgpu.controlplane.autoscaler import ReplicaAutoscaler
from kgpu.controlplane.events import EventLog
from kgpu.controlplane.registry import BackendRegistry
from kgpu.controlplane.resources import with_metadata
from kgpu.controlplane.store import StoredResource
from kgpu.gateway.metrics import GatewayMetrics
from kgpu.multicluster.health import HEALTHY, SUSPECT
from kgpu.serving.model_task import served_task

RECENT_EVENTS = 10
# The OpenAI endpoints a service answers on, by the task its replicas serve (kgpu.serving.model_task); the
# first is the one `endpoint` names.
OPENAI_PATHS = {
    "generation": ("/v1/chat/completions", "/v1/completions"),
    "embedding": ("/v1/embeddings",),
}


def service_endpoints(public_url: str, service: InferenceService) -> list[str]:
    """The URLs a client sends this service's requests to: chat and completions for a generation model,
    embeddings otherwise."""
    task = served_task(service.spec.model.task, service.spec.model.uri)
    return [f"{public_url}{path}" for path in OPENAI_PATHS[task]]


class StatusView:
    def __init__(
        self,
        backend: BackendRegistry,
        autoscaler: ReplicaAutoscaler,
        events: EventLog,
        metrics: GatewayMetrics,
        public_url: str,
        parsed: Callable[[StoredResource], object],
    ) -> None:
        self.backend = backend
        self.autoscaler = autoscaler
        self.events = events
        self.metrics = metrics
        self.public_url = public_url
        self._parsed = parsed

    def service(self, service: InferenceService) -> dict:
        key = service.key
        endpoints = service_endpoints(self.public_url, service)
        endpoint = endpoints[0]
        desired = self.autoscaler.desired(service)
        across = self.backend.cluster_reports(key)
        reported = None if across is not None else self.backend.service_report(key, desired)
        if across is not None:  # spec.placement: the sum over its clusters, and each cluster's part
            status = self._across_clusters(key, desired, across)
            ready = status["readyReplicas"]
        elif reported is not None:  # a Kubernetes cluster's operator, a sim cluster: their own view
            status = reported
            ready = reported["readyReplicas"]
        else:
            current = [r for r in self.backend.replicas(key) if r.phase != "Draining"]
            ready = sum(1 for r in current if r.phase == "Ready")
            pending = [r for r in current if r.phase == "Pending"]
            crashing = [r for r in current if r.phase == "CrashLoopBackOff"]
            phase, reason = service_phase(desired, ready, crashing=bool(crashing), pending=bool(pending))
            first = (pending or crashing or [None])[0]
            status = {
                "phase": phase,
                "replicas": desired,
                "readyReplicas": ready,
                "endpoint": endpoint,
                "conditions": [ready_condition(phase, reason, first.message if first else "")],
            }
        self.metrics.ready_replicas.labels(service=key).set(ready)
        self.metrics.desired_replicas.labels(service=key).set(desired)
        scaling = self.autoscaler.status(service)
        return {
            **status,
            "endpoint": endpoint,
            "endpoints": endpoints,
            "events": self.events.recent(key, limit=RECENT_EVENTS),
            **({"autoscaling": scaling} if scaling else {}),
        }

    def _across_clusters(self, key: str, desired: int, clusters: list[dict]) -> dict:
        placed = self.backend.placements[key]
        ready = sum(c["readyReplicas"] for c in clusters)
        unplaced = placed.split.unplaced
        # Replicas the autoscaler held for load not seen yet that found no capacity booted at the
        # lowest price are not started anywhere: the service is ready without them.
        dropped = min(desired, placed.split.dropped)
        desired -= dropped
        phase, reason = service_phase(desired, ready, pending=unplaced > 0)
        skipped = [f"{c['name']}: {c['reason']}" for c in clusters if "reason" in c]
        message = "; ".join(
            ([f"{unplaced} replica(s) fit in no allowed cluster"] if unplaced else [])
            + (
                [f"{dropped} speculative replica(s) not started: no capacity booted at the lowest price"]
                if dropped
                else []
            )
            + ([f"skipped {', '.join(skipped)}"] if skipped else [])
        )
        for c in clusters:
            self.metrics.cluster_replicas.labels(service=key, cluster=c["name"]).set(c["replicas"])
            self.metrics.cluster_ready_replicas.labels(service=key, cluster=c["name"]).set(c["readyReplicas"])
        return {
            "phase": phase,
            "replicas": desired,
            "readyReplicas": ready,
            "placementPolicy": placed.policy,
            "clusters": clusters,
            **({"unplacedReplicas": unplaced} if unplaced else {}),
            **({"droppedSpeculativeReplicas": dropped} if dropped else {}),
            "conditions": [ready_condition(phase, reason, message)],
        }

    def pool(self, pool: NodePool) -> dict:
        reported = self.backend.pool_report(pool)
        return reported if reported is not None else pool_status(pool)

    def cluster(self, cluster: Cluster) -> dict:
        """A cluster's availability as its heartbeats say (kgpu.multicluster.health)."""
        state, error = self.backend.health.report(cluster.key)
        if state == HEALTHY:
            phase, reason, message = "Available", "HeartbeatAnswered", ""
        elif state == SUSPECT:
            phase, reason = "Suspect", "HeartbeatMissed"
            message = (
                f"silent, within the grace period (not routed to; replacements start elsewhere): {error}"
            )
        else:
            phase, reason, message = "Unavailable", "HeartbeatMissed", error
        condition = {
            "type": "Available",
            # As a node's Ready condition while its heartbeats are missing: Unknown, not yet False.
            "status": {HEALTHY: "True", SUSPECT: "Unknown"}.get(state, "False"),
            "reason": reason,
            "message": message,
        }
        return {"phase": phase, "conditions": [condition]}

    def render(self, stored: StoredResource) -> dict:
        """The stored resource as the API returns it: server-owned metadata and the status filled in."""
        body = with_metadata(stored)
        if stored.kind == "InferenceService":
            service = self._parsed(stored)
            assert isinstance(service, InferenceService)
            body["status"] = self.service(service)
        elif stored.kind == "NodePool":
            pool = self._parsed(stored)
            assert isinstance(pool, NodePool)
            body["status"] = self.pool(pool)
        elif stored.kind == "Cluster":
            cluster = self._parsed(stored)
            assert isinstance(cluster, Cluster)
            body["status"] = self.cluster(cluster)
        return body
