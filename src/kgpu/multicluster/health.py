"""Whether each cluster is trusted: heartbeats in, transitions out; suspect at once, lost after a grace period.

Kubernetes separates two decisions about a node that stops answering: its pods leave the
Services' endpoints at once (NotReady), and they are evicted only later. A cluster gets the same
two steps here, so that an outage costs the service only the replacements' start-up, not the
grace period as well:

- `healthy`: its backend answers; the gateway routes there and its ready replicas count;
- `suspect`: from the first missed heartbeat (or a connection the gateway could not make to it):
  the gateway stops routing there at once, and its replicas no longer count as ready capacity,
  so replacements start at once in the other clusters (a surge), while the replicas there are
  left alone (a network blip or a slow API server must not delete every replica);
- `unavailable`: silent for `grace_s`: the cluster is declared lost and its replicas there are
  deleted. With `grace_s` 0 the first miss declares it lost.

One answer makes a suspect or unavailable cluster healthy again (from suspect, the surge is then
surplus and the normal scale-down removes it, draining first). Each change is returned once as a
`Transition`, so the caller turns it into an event and a metric, and moves replicas. Pure state
over an injected clock: no I/O here; the live control plane and the fleet replay
(`kgpu.sim.fleet_replay`) both drive it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_GRACE_S = 10.0

HEALTHY, SUSPECT, UNAVAILABLE = "healthy", "suspect", "unavailable"
STATES = (HEALTHY, SUSPECT, UNAVAILABLE)


@dataclass(frozen=True)
class Transition:
    cluster: str
    state: str  # the new one
    was: str
    message: str

    @property
    def trusted(self) -> bool:
        """Whether the gateway may route there (and its replicas count) from now on."""
        return self.state == HEALTHY


@dataclass
class _State:
    state: str = HEALTHY
    last_answer: float | None = None
    first_miss: float | None = None
    error: str = ""


class ClusterHealth:
    def __init__(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        if grace_s < 0:
            raise ValueError(f"grace period must be >= 0 s, not {grace_s}")
        self.grace_s = grace_s
        self._states: dict[str, _State] = {}

    def state(self, cluster: str) -> str:
        """A cluster never heard of is healthy (nothing says otherwise yet)."""
        state = self._states.get(cluster)
        return HEALTHY if state is None else state.state

    def trusted(self, cluster: str) -> bool:
        """Healthy: the gateway routes there and its ready replicas count."""
        return self.state(cluster) == HEALTHY

    def available(self, cluster: str) -> bool:
        """Not declared lost (healthy or suspect): its replicas there are kept."""
        return self.state(cluster) != UNAVAILABLE

    def unavailable(self) -> set[str]:
        return {name for name, state in self._states.items() if state.state == UNAVAILABLE}

    def untrusted(self) -> set[str]:
        return {name for name, state in self._states.items() if state.state != HEALTHY}

    def answered(self, cluster: str, now: float) -> Transition | None:
        state = self._states.setdefault(cluster, _State())
        was = state.state
        state.last_answer, state.first_miss, state.error, state.state = now, None, "", HEALTHY
        if was == HEALTHY:
            return None
        if was == SUSPECT:
            message = f"cluster {cluster} healthy again within its grace period: its backend answers"
        else:
            message = f"cluster {cluster} available again: its backend answers"
        return Transition(cluster, HEALTHY, was, message)

    def missed(self, cluster: str, now: float, error: str) -> Transition | None:
        """A heartbeat (or a connection) that got no answer: suspect at the first, unavailable once
        the misses have lasted `grace_s`; a transition at each of those two steps."""
        state = self._states.setdefault(cluster, _State())
        if state.first_miss is None:
            state.first_miss = now
        state.error = error
        silent = now - state.first_miss
        was = state.state
        if was == UNAVAILABLE:
            return None
        if silent >= self.grace_s:
            state.state = UNAVAILABLE
            return Transition(
                cluster,
                UNAVAILABLE,
                was,
                f"cluster {cluster} unavailable: no answer for {silent:.1f} s (grace {self.grace_s:g} s): {error}",
            )
        if was == SUSPECT:
            return None
        state.state = SUSPECT
        return Transition(
            cluster,
            SUSPECT,
            was,
            f"cluster {cluster} suspect: no answer ({error}); not routed to, replacements start "
            f"elsewhere; unavailable after {self.grace_s:g} s of silence",
        )

    def report(self, cluster: str) -> tuple[str, str]:
        """(state, why): the last heartbeat's error while it is silent, else ""."""
        state = self._states.get(cluster)
        if state is None:
            return HEALTHY, ""
        return state.state, state.error

    def forget(self, cluster: str) -> None:
        """A deleted Cluster: nothing is kept about it."""
        self._states.pop(cluster, None)

    def known(self) -> list[str]:
        return sorted(self._states)
