"""How many of a service's replicas each cluster gets: a pure split of one desired count.

The control plane decides a service's desired replica count once (the autoscaler's decision);
this module splits it over the clusters the service may run in, and each cluster's backend then
places its share as it would place a one-cluster service. Keeping the split a pure function of
the offers (no store, no clock, no backend) lets the live reconciler and the fleet replay use the
same code, and lets a property test pin its rules.

Policies (`PLACEMENT_POLICIES`, chosen by `spec.placement.policy`):

- `fill`: the cheapest cluster (price per GPU-hour of the GPU the service gets there) first, up
  to what it can hold once its node pools grow; the rest overflows to the next cheapest;
- `spread`: balanced over the clusters, for availability: counts differ by at most one among
  clusters that still have room;
- `failover`: everything on the first cluster in the declared order; the backups take only what
  it cannot hold, and everything when it is unavailable.

A cluster that is not healthy (`kgpu.multicluster.health`: suspect or unavailable), or cannot host
the service at all (no fitting GPU model, no quota), gets 0 and is listed with its reason, so a
suspect cluster's share goes to the others at once. Replicas no cluster can hold are `unplaced`.

The replicas an autoscaler holds for load not seen yet (`speculative`, e.g. kgpu's headroom) are
split apart, whatever the policy: only onto capacity booted now in the clusters at the lowest
price the service's clusters offer (`place_speculative`); those that find none are `dropped`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kgpu.multicluster.health import HEALTHY, SUSPECT

UNAVAILABLE = "cluster unavailable"
SUSPECTED = "cluster suspect: silent, within its grace period"


@dataclass(frozen=True)
class ClusterOffer:
    """What one cluster offers one service, in the declared order of the service's clusters."""

    name: str
    health: str = HEALTHY  # kgpu.multicluster.health's state: only a healthy cluster gets a share
    local: bool = False  # the gateway's own cluster (ties go to it: no hop between clusters)
    price_per_gpu_hour: float = 0.0  # USD, of the GPU the service would get there; 0 for CPU
    # Replicas of this service the cluster can hold now (those it runs plus free room; None: no
    # known bound, e.g. a Kubernetes cluster whose nodes an external autoscaler adds), and once its
    # node pools grow to their maximum (None: what it holds now).
    capacity: int | None = None
    max_capacity: int | None = None
    current: int = 0  # replicas of the service it runs now (ties keep them where they are)
    reason: str | None = None  # why it cannot host the service at all; None when it can

    @property
    def room(self) -> int | None:
        """The most replicas it can be given: what it holds once its pools grow (None: no bound)."""
        if self.capacity is None:
            return self.max_capacity
        return max(self.capacity, self.max_capacity or 0)

    @property
    def skip_reason(self) -> str | None:
        if self.reason is not None:
            return self.reason
        if self.health == HEALTHY:
            return None
        return SUSPECTED if self.health == SUSPECT else UNAVAILABLE


@dataclass(frozen=True)
class ClusterSplit:
    replicas: dict[str, int]  # every offered cluster, in the declared order; 0 for skipped ones
    skipped: dict[str, str] = field(default_factory=dict)  # cluster -> why it gets none
    unplaced: int = 0  # replicas no allowed cluster can hold
    dropped: int = 0  # speculative replicas not placed: no capacity booted at the lowest price

    @property
    def placed(self) -> int:
        return sum(self.replicas.values())


def _has_room(offer: ClusterOffer, given: int) -> bool:
    room = offer.room
    return room is None or given < room


def _take(offer: ClusterOffer, wanted: int) -> int:
    room = offer.room
    return wanted if room is None else min(wanted, max(0, room))


def _in_order(desired: int, ordered: Sequence[ClusterOffer]) -> dict[str, int]:
    """Fill the clusters one after another in the given order, each up to its room."""
    counts = {}
    left = desired
    for offer in ordered:
        counts[offer.name] = _take(offer, left)
        left -= counts[offer.name]
    return counts


def fill(desired: int, candidates: Sequence[ClusterOffer]) -> dict[str, int]:
    # Cheapest first; equal prices go to the local cluster, then the declared order.
    declared = {offer.name: i for i, offer in enumerate(candidates)}
    ordered = sorted(candidates, key=lambda o: (o.price_per_gpu_hour, not o.local, declared[o.name]))
    return _in_order(desired, ordered)


def spread(desired: int, candidates: Sequence[ClusterOffer]) -> dict[str, int]:
    counts = {offer.name: 0 for offer in candidates}
    declared = {offer.name: i for i, offer in enumerate(candidates)}
    left = desired
    while left > 0:
        open_ = [offer for offer in candidates if _has_room(offer, counts[offer.name])]
        if not open_:
            break
        level = counts[open_[0].name]
        if left >= len(open_) and all(counts[o.name] == level for o in open_):
            # Every open cluster as empty as the others: the next rounds give each one replica, in
            # whatever order; give them at once (a split of thousands of replicas stays cheap).
            rounds = min([left // len(open_), *(o.room - level for o in open_ if o.room is not None)])
            for offer in open_:
                counts[offer.name] += rounds
            left -= rounds * len(open_)
            continue
        # The emptiest cluster; ties go where the replica already runs (no move), then local,
        # then the declared order, so the same inputs always give the same split.
        chosen = min(
            open_,
            key=lambda o: (
                counts[o.name],
                counts[o.name] >= o.current,
                not o.local,
                declared[o.name],
            ),
        )
        counts[chosen.name] += 1
        left -= 1
    return counts


def failover(desired: int, candidates: Sequence[ClusterOffer]) -> dict[str, int]:
    return _in_order(desired, candidates)


PlacementPolicy = Callable[[int, Sequence[ClusterOffer]], dict[str, int]]
PLACEMENT_POLICIES: Mapping[str, PlacementPolicy] = {"fill": fill, "spread": spread, "failover": failover}


def place_speculative(
    speculative: int,
    counts: dict[str, int],
    offers: Sequence[ClusterOffer],
    candidates: Sequence[ClusterOffer],
) -> int:
    """Add up to ``speculative`` replicas to ``counts`` on the capacity booted now (``capacity``; the
    whole room when that is unknown) of the candidates priced at the lowest price of all ``offers``
    that can host the service, healthy or not; returns how many found no such place.

    Speculative replicas (`kgpu.autoscaling.policy.ScalingDecision.speculative`) are held for load
    not seen yet: worth their price only where it is lowest. A cheap cluster out of service does not
    make a dearer one the lowest price, and no node is added for them (the policy holds them only on
    free GPUs, which over several clusters include a dear cluster's booted ones)."""
    hosting = [offer for offer in offers if offer.reason is None]
    if not hosting:
        return speculative
    lowest = min(offer.price_per_gpu_hour for offer in hosting)
    declared = {offer.name: i for i, offer in enumerate(candidates)}
    cheapest = sorted(
        (offer for offer in candidates if offer.price_per_gpu_hour == lowest),
        key=lambda o: (not o.local, declared[o.name]),
    )
    left = speculative
    for offer in cheapest:
        booted = offer.capacity if offer.capacity is not None else offer.room
        given = left if booted is None else min(left, max(0, booted - counts.get(offer.name, 0)))
        counts[offer.name] = counts.get(offer.name, 0) + given
        left -= given
    return left


def split_replicas(
    desired: int, offers: Sequence[ClusterOffer], policy: str, speculative: int = 0
) -> ClusterSplit:
    """Split `desired` replicas over `offers` (the service's clusters in declared order) by `policy`;
    the last `speculative` of them only where `place_speculative` allows (those it cannot place are
    `dropped`, not `unplaced`: nothing waits for them)."""
    if policy not in PLACEMENT_POLICIES:
        raise ValueError(f"unknown placement policy {policy!r}; known: {', '.join(PLACEMENT_POLICIES)}")
    if desired < 0:
        raise ValueError(f"desired replicas must be >= 0, not {desired}")
    if not 0 <= speculative <= desired:
        raise ValueError(f"speculative replicas must be within 0..{desired} (desired), not {speculative}")
    names = [offer.name for offer in offers]
    if len(set(names)) != len(names):
        raise ValueError(f"a cluster is offered twice: {names}")
    skipped = {offer.name: offer.skip_reason for offer in offers if offer.skip_reason is not None}
    candidates = [offer for offer in offers if offer.name not in skipped]
    firm = desired - speculative
    counts = PLACEMENT_POLICIES[policy](firm, candidates)
    unplaced = firm - sum(counts.values())
    dropped = place_speculative(speculative, counts, offers, candidates) if speculative else 0
    replicas = {offer.name: counts.get(offer.name, 0) for offer in offers}
    return ClusterSplit(replicas=replicas, skipped=skipped, unplaced=unplaced, dropped=dropped)
