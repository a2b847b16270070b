"""Whether each cluster is available: heartbeats in, transitions out, after a grace period.

A cluster whose backend stops answering (its API unreachable, heartbeats missed) is not given up
at the first miss: a network blip or a slow API server must not move every replica. It is marked
unavailable once it has not answered for `grace_s`; one answer marks it available again. Each
change is returned once as a `Transition`, so the caller turns it into an event and a metric, and
moves replicas. Pure state over an injected clock: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_GRACE_S = 10.0


@dataclass(frozen=True)
class Transition:
    cluster: str
    available: bool
    message: str


@dataclass
class _State:
    available: bool = True
    last_answer: float | None = None
    first_miss: float | None = None
    error: str = ""


class ClusterHealth:
    def __init__(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        if grace_s < 0:
            raise ValueError(f"grace period must be >= 0 s, not {grace_s}")
        self.grace_s = grace_s
        self._states: dict[str, _State] = {}

    def available(self, cluster: str) -> bool:
        """A cluster never heard of is available (nothing says otherwise yet)."""
        state = self._states.get(cluster)
        return state is None or state.available

    def unavailable(self) -> set[str]:
        return {name for name, state in self._states.items() if not state.available}

    def answered(self, cluster: str, now: float) -> Transition | None:
        state = self._states.setdefault(cluster, _State())
        state.last_answer, state.first_miss, state.error = now, None, ""
        if state.available:
            return None
        state.available = True
        return Transition(cluster, True, f"cluster {cluster} available again: its backend answers")

    def missed(self, cluster: str, now: float, error: str) -> Transition | None:
        """A heartbeat that got no answer; a transition once the misses have lasted `grace_s`."""
        state = self._states.setdefault(cluster, _State())
        if state.first_miss is None:
            state.first_miss = now
        state.error = error
        silent = now - state.first_miss
        if not state.available or silent < self.grace_s:
            return None
        state.available = False
        return Transition(
            cluster,
            False,
            f"cluster {cluster} unavailable: no answer for {silent:.1f} s (grace {self.grace_s:g} s): {error}",
        )

    def report(self, cluster: str) -> tuple[bool, str]:
        """(available, why): the last heartbeat's error while it is silent, else ""."""
        state = self._states.get(cluster)
        if state is None:
            return True, ""
        return state.available, state.error

    def forget(self, cluster: str) -> None:
        """A deleted Cluster: nothing is kept about it."""
        self._states.pop(cluster, None)

    def known(self) -> list[str]:
        return sorted(self._states)
