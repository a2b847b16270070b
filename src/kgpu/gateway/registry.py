"""Which replicas can take a service's requests right now, and how busy each one is.

The backend adds a replica when its `/v2/health/ready` answers and removes it when
it dies or starts draining; the router reads from here. Everything runs on one
event loop, so plain attributes are enough (no locks).

A service may run in several clusters: each endpoint names its cluster, a cluster not trusted
(suspect or unavailable, `kgpu.multicluster.health`) gets no new request from the next pick on, and an endpoint in another cluster than
the gateway's own counts one request busier than it is (the hop between clusters costs latency),
so the local cluster is preferred while remote replicas still take load when it is busier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Endpoint:
    """One ready replica as the gateway sees it."""

    service: str  # "<namespace>/<name>"
    replica: str
    url: str  # base URL, e.g. http://127.0.0.1:41234
    outstanding: int = 0  # requests the gateway has sent and not yet seen answered
    # Generation work sent and not yet seen answered, in tokens: prompts plus tokens still to generate.
    work: int = 0
    draining: bool = False
    served: int = 0
    cluster: str | None = None  # "<namespace>/<name>" of its cluster; None: the control plane's own
    local: bool = True  # in the gateway's own cluster (no hop between clusters)
    # It stands for its cluster's whole share (a Kubernetes cluster's Service), so no connection to it
    # means no connection to that cluster; a replica's own endpoint may just have died.
    whole_cluster: bool = False

    @property
    def routable(self) -> bool:
        return not self.draining


class ReplicaRegistry:
    """Ready replicas per service, with their outstanding request counts."""

    def __init__(self) -> None:
        # service -> replica -> endpoint; a service is here only while it has endpoints.
        self._services: dict[str, dict[str, Endpoint]] = {}
        # Called with the service key when its replica set changes (the router admits waiters).
        self.on_change: Callable[[str], None] = lambda service: None
        self._down: set[str] = set()  # clusters not trusted: their endpoints get nothing new

    def _endpoints(self, service: str) -> dict[str, Endpoint]:
        """A service's endpoints; reading never creates an entry (no state for unknown services)."""
        return self._services.get(service, {})

    def _notify(self, service: str) -> None:
        self.on_change(service)

    def add(
        self,
        service: str,
        replica: str,
        url: str,
        cluster: str | None = None,
        local: bool = True,
        whole_cluster: bool = False,
    ) -> Endpoint:
        endpoints = self._services.setdefault(service, {})
        endpoint = endpoints.get(replica)
        if endpoint is None or endpoint.url != url:
            endpoint = Endpoint(service=service, replica=replica, url=url)
            endpoints[replica] = endpoint
        endpoint.cluster, endpoint.local, endpoint.whole_cluster = cluster, local, whole_cluster
        endpoint.draining = False
        self._notify(service)
        return endpoint

    def set_cluster_available(self, cluster: str, available: bool) -> None:
        """A cluster suspect or lost: its endpoints get no new request at once (in-flight ones finish or
        fail and are retried elsewhere); healthy again: they take requests again."""
        if available == (cluster not in self._down):
            return
        if available:
            self._down.discard(cluster)
        else:
            self._down.add(cluster)
        for service, endpoints in list(self._services.items()):
            if any(e.cluster == cluster for e in endpoints.values()):
                self._notify(service)

    def _routable(self, endpoint: Endpoint) -> bool:
        return endpoint.routable and endpoint.cluster not in self._down

    def remove(self, service: str, replica: str) -> None:
        endpoints = self._services.get(service)
        if endpoints is None or endpoints.pop(replica, None) is None:
            return
        if not endpoints:  # a deleted service leaves nothing behind
            del self._services[service]
        self._notify(service)

    def start_draining(self, service: str, replica: str) -> Endpoint | None:
        """Stop sending new requests to a replica; in-flight ones finish."""
        endpoint = self._endpoints(service).get(replica)
        if endpoint is not None:
            endpoint.draining = True
            self._notify(service)
        return endpoint

    def endpoints(self, service: str) -> list[Endpoint]:
        return list(self._endpoints(service).values())

    def get(self, service: str, replica: str) -> Endpoint | None:
        return self._endpoints(service).get(replica)

    def pick(
        self, service: str, exclude_urls: set[str] | frozenset[str] = frozenset(), limit: int = 0
    ) -> Endpoint | None:
        """The routable replica with the least outstanding generation work, then the fewest outstanding
        requests (ties: fewest served). Embedding requests carry no work, so for them requests decide.

        ``limit`` > 0 skips replicas that already have that many requests outstanding
        (the service's containerConcurrency). Exclusion is by URL, not name: a restarted
        replica keeps its name but gets a new port, and a request that failed on the old
        process may try the new one.
        """
        candidates = [
            e
            for e in self._endpoints(service).values()
            if self._routable(e) and e.url not in exclude_urls and (limit <= 0 or e.outstanding < limit)
        ]
        if not candidates:
            return None
        # A remote endpoint counts one request busier; ties go to the local cluster.
        return min(candidates, key=lambda e: (e.work, e.outstanding + (not e.local), not e.local, e.served))

    def free_slots(self, service: str, limit: int = 0) -> int | float:
        """Requests the service's routable replicas can take now (unbounded without a limit)."""
        routable = [e for e in self._endpoints(service).values() if self._routable(e)]
        if limit <= 0:
            return float("inf") if routable else 0
        return sum(max(0, limit - e.outstanding) for e in routable)

    def routable_count(self, service: str) -> int:
        """Endpoints that take new requests now (not draining, not in a lost cluster)."""
        return sum(1 for e in self._endpoints(service).values() if self._routable(e))

    def outstanding(self, service: str) -> int:
        return sum(e.outstanding for e in self._endpoints(service).values())

    def outstanding_by_service(self) -> dict[str, int]:
        """Requests in flight to each service's replicas (the gateway's metric, read when scraped, from
        the scrape's thread: copies of the dicts are taken first, each in one step under the GIL)."""
        return {
            service: sum(e.outstanding for e in list(endpoints.values()))
            for service, endpoints in list(self._services.items())
        }
