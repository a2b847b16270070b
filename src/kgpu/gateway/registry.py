"""Which replicas can take a service's requests right now, and how busy each one is.

The backend adds a replica when its `/v2/health/ready` answers and removes it when
it dies or starts draining; the router reads from here. Everything runs on one
event loop, so plain attributes are enough (no locks).
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

    def _endpoints(self, service: str) -> dict[str, Endpoint]:
        """A service's endpoints; reading never creates an entry (no state for unknown services)."""
        return self._services.get(service, {})

    def _notify(self, service: str) -> None:
        self.on_change(service)

    def add(self, service: str, replica: str, url: str) -> Endpoint:
        endpoints = self._services.setdefault(service, {})
        endpoint = endpoints.get(replica)
        if endpoint is None or endpoint.url != url:
            endpoint = Endpoint(service=service, replica=replica, url=url)
            endpoints[replica] = endpoint
        endpoint.draining = False
        self._notify(service)
        return endpoint

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
            if e.routable and e.url not in exclude_urls and (limit <= 0 or e.outstanding < limit)
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda e: (e.work, e.outstanding, e.served))

    def free_slots(self, service: str, limit: int = 0) -> int | float:
        """Requests the service's routable replicas can take now (unbounded without a limit)."""
        routable = [e for e in self._endpoints(service).values() if e.routable]
        if limit <= 0:
            return float("inf") if routable else 0
        return sum(max(0, limit - e.outstanding) for e in routable)

    def outstanding(self, service: str) -> int:
        return sum(e.outstanding for e in self._endpoints(service).values())
