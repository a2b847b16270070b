"""The split of one desired replica count over clusters: each policy's rule, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgpu.multicluster.health import HEALTHY, STATES
from kgpu.multicluster.placement import (
    PLACEMENT_POLICIES,
    SUSPECTED,
    UNAVAILABLE,
    ClusterOffer,
    place_speculative,
    split_replicas,
)

ON_PREM = ClusterOffer("on-prem", price_per_gpu_hour=1.0, capacity=2, max_capacity=3)
CLOUD = ClusterOffer("cloud", price_per_gpu_hour=2.5, capacity=0, max_capacity=20)


def test_fill_uses_the_cheaper_cluster_first_and_overflows_to_the_dearer():
    offers = [CLOUD, ON_PREM]  # declared dear first: fill goes by price, not order
    assert split_replicas(2, offers, "fill").replicas == {"cloud": 0, "on-prem": 2}
    # The cheap cluster holds 3 once its pool grows; the rest goes to the cloud.
    split = split_replicas(7, offers, "fill")
    assert split.replicas == {"cloud": 4, "on-prem": 3}
    assert (split.skipped, split.unplaced) == ({}, 0)


def test_fill_breaks_equal_prices_towards_the_local_cluster():
    offers = [
        ClusterOffer("a", price_per_gpu_hour=1.0),
        ClusterOffer("b", price_per_gpu_hour=1.0, local=True),
    ]
    assert split_replicas(3, offers, "fill").replicas == {"a": 0, "b": 3}


def test_spread_balances_and_keeps_the_odd_replica_where_it_already_runs():
    offers = [ClusterOffer("a"), ClusterOffer("b"), ClusterOffer("c")]
    assert split_replicas(6, offers, "spread").replicas == {"a": 2, "b": 2, "c": 2}
    assert split_replicas(4, offers, "spread").replicas == {"a": 2, "b": 1, "c": 1}
    moved = [ClusterOffer("a"), ClusterOffer("b"), ClusterOffer("c", current=2)]
    assert split_replicas(4, moved, "spread").replicas == {"a": 1, "b": 1, "c": 2}


def test_spread_of_the_most_replicas_over_the_most_clusters_is_balanced():
    """A service may ask for 10,000 replicas over 64 clusters; the split runs on the control plane's
    event loop every pass, so whole rounds are given at once, with the tie rules of one at a time
    (the answer is pinned here; its cost is not a test's business)."""
    offers = [ClusterOffer(f"c{i}") for i in range(63)]
    offers.append(ClusterOffer("c63", current=200, capacity=100))
    split = split_replicas(10_000, offers, "spread")
    assert split.replicas["c63"] == 100  # full
    # 9,900 over 63: 157 each, and the 9 left go in declared order.
    assert [split.replicas[f"c{i}"] for i in range(63)] == [158] * 9 + [157] * 54
    assert split.unplaced == 0


def test_spread_gives_a_full_cluster_its_room_and_the_rest_to_the_others():
    offers = [ClusterOffer("small", capacity=1), ClusterOffer("big")]
    assert split_replicas(5, offers, "spread").replicas == {"small": 1, "big": 4}


def test_failover_puts_everything_on_the_primary_and_uses_backups_when_it_is_lost():
    primary, backup = ClusterOffer("primary"), ClusterOffer("backup", price_per_gpu_hour=0.1)
    assert split_replicas(4, [primary, backup], "failover").replicas == {"primary": 4, "backup": 0}
    lost = ClusterOffer("primary", health="unavailable")
    split = split_replicas(4, [lost, backup], "failover")
    assert split.replicas == {"primary": 0, "backup": 4}
    assert split.skipped == {"primary": UNAVAILABLE}
    # Suspect (silent within its grace period): its share goes to the backup already, with its reason.
    split = split_replicas(4, [ClusterOffer("primary", health="suspect"), backup], "failover")
    assert split.replicas == {"primary": 0, "backup": 4}
    assert split.skipped == {"primary": SUSPECTED}


def test_a_cluster_that_cannot_host_the_service_is_skipped_with_its_reason():
    no_gpu = ClusterOffer("cpu-only", reason="no node pool has a GPU of models H100-80GB")
    split = split_replicas(3, [no_gpu, ClusterOffer("gpu", capacity=2)], "spread")
    assert split.replicas == {"cpu-only": 0, "gpu": 2}
    assert split.skipped == {"cpu-only": "no node pool has a GPU of models H100-80GB"}
    assert split.unplaced == 1


def test_speculative_replicas_go_only_to_booted_capacity_at_the_lowest_price():
    # On-prem runs 2 replicas, has 1 GPU free now (capacity 3), and no room to grow; the cloud has
    # 8 booted GPUs free and room for 24 more on new nodes, at 2.5x the price.
    cheap = ClusterOffer("on-prem", price_per_gpu_hour=1.0, capacity=3, max_capacity=3, current=2)
    dear = ClusterOffer("cloud", price_per_gpu_hour=2.5, capacity=8, max_capacity=32)
    offers = [cheap, dear]
    # 6 wanted, 2 of them speculative: the 4 seen fill on-prem (3) and overflow to the cloud (1);
    # on-prem is full, so both speculative replicas are dropped rather than bought in the cloud.
    split = split_replicas(6, offers, "fill", speculative=2)
    assert split.replicas == {"on-prem": 3, "cloud": 1}
    assert (split.unplaced, split.dropped, split.placed) == (0, 2, 4)
    # 3 wanted, 1 speculative: the 2 seen leave on-prem one free GPU, which the speculative one takes.
    split = split_replicas(3, offers, "fill", speculative=1)
    assert split.replicas == {"on-prem": 3, "cloud": 0} and split.dropped == 0
    # On-prem suspect: the load seen moves to the cloud, but the lowest price on offer is still
    # on-prem's, so nothing speculative is bought at the cloud's.
    suspect = [ClusterOffer("on-prem", health="suspect", price_per_gpu_hour=1.0, capacity=3), dear]
    split = split_replicas(5, suspect, "fill", speculative=2)
    assert split.replicas == {"on-prem": 0, "cloud": 3} and split.dropped == 2
    # A cluster that cannot host the service sets no price; booted capacity bounds, growth does not.
    unfit = ClusterOffer("gpu-less", price_per_gpu_hour=0.5, capacity=10, reason="no pool offers the GPU")
    split = split_replicas(12, [unfit, dear], "fill", speculative=6)
    assert split.replicas == {"gpu-less": 0, "cloud": 8} and split.dropped == 4
    # Whatever the policy: spread balances the 2 seen (1 and 1); the 2 speculative ones take
    # on-prem's booted room (3 - 1), none goes to the cloud.
    split = split_replicas(4, offers, "spread", speculative=2)
    assert split.replicas == {"on-prem": 3, "cloud": 1} and split.dropped == 0


def test_unknown_policy_and_bad_input_are_refused():
    with pytest.raises(
        ValueError, match="unknown placement policy 'cheapest'; known: fill, spread, failover"
    ):
        split_replicas(1, [CLOUD], "cheapest")
    with pytest.raises(ValueError, match="offered twice"):
        split_replicas(1, [CLOUD, CLOUD], "fill")
    with pytest.raises(ValueError, match=">= 0"):
        split_replicas(-1, [CLOUD], "fill")


bounds = st.one_of(st.none(), st.integers(0, 12))
offers_strategy = st.lists(
    st.builds(
        ClusterOffer,
        name=st.sampled_from("abcdefgh"),
        health=st.sampled_from(STATES),
        local=st.booleans(),
        price_per_gpu_hour=st.sampled_from([0.0, 0.8, 1.0, 2.5, 3.5]),
        capacity=bounds,
        max_capacity=bounds,
        current=st.integers(0, 5),
        reason=st.one_of(st.none(), st.just("no quota for nvidia.com/gpu")),
    ),
    max_size=6,
    unique_by=lambda offer: offer.name,
)


@settings(max_examples=300, deadline=None)
@given(desired=st.integers(0, 40), offers=offers_strategy, policy=st.sampled_from(sorted(PLACEMENT_POLICIES)))
def test_split_properties(desired, offers, policy):
    split = split_replicas(desired, offers, policy)
    usable = [o for o in offers if o.health == HEALTHY and o.reason is None]
    # Every offered cluster is in the answer; only usable ones get replicas, the others say why.
    assert list(split.replicas) == [o.name for o in offers]
    assert set(split.skipped) == {o.name for o in offers} - {o.name for o in usable}
    assert all(split.replicas[name] == 0 for name in split.skipped)
    # No cluster beyond its room; the sum is the desired count when the rooms allow it.
    assert all(o.room is None or split.replicas[o.name] <= o.room for o in usable)
    total_room = None if any(o.room is None for o in usable) else sum(o.room for o in usable)
    expected = desired if total_room is None else min(desired, total_room)
    assert split.placed == expected and split.unplaced == desired - expected
    has_room = [o for o in usable if o.room is None or split.replicas[o.name] < o.room]
    if policy == "fill":
        # Never a replica on a dearer cluster while a cheaper one still has room.
        for cheap in has_room:
            assert all(
                split.replicas[o.name] == 0 for o in usable if o.price_per_gpu_hour > cheap.price_per_gpu_hour
            )
    if policy == "spread" and has_room:
        # Clusters with room differ by at most one; a full one holds at most one more than they do.
        counts = [split.replicas[o.name] for o in has_room]
        assert max(counts) - min(counts) <= 1
        assert all(split.replicas[o.name] <= max(counts) + 1 for o in usable)
    if policy == "failover":
        # A backup gets replicas only once every cluster before it is full.
        for i, o in enumerate(usable):
            if split.replicas[o.name]:
                assert all(p.room is not None and split.replicas[p.name] == p.room for p in usable[:i])


@settings(max_examples=300, deadline=None)
@given(
    desired=st.integers(0, 40),
    share=st.floats(0, 1),
    offers=offers_strategy,
    policy=st.sampled_from(sorted(PLACEMENT_POLICIES)),
)
def test_speculative_replicas_add_to_the_firm_split_only_at_the_lowest_price(desired, share, offers, policy):
    speculative = int(desired * share)
    split = split_replicas(desired, offers, policy, speculative)
    firm = split_replicas(desired - speculative, offers, policy)
    assert split.unplaced == firm.unplaced
    assert split.placed + split.unplaced + split.dropped == desired
    hosting = [o for o in offers if o.reason is None]
    lowest = min((o.price_per_gpu_hour for o in hosting), default=None)
    for o in offers:
        extra = split.replicas[o.name] - firm.replicas[o.name]
        assert extra >= 0
        if extra:
            # Only a healthy cluster at the lowest price, and no further than what is booted there.
            assert o.health == HEALTHY and o.reason is None and o.price_per_gpu_hour == lowest
            booted = o.capacity if o.capacity is not None else o.room
            assert booted is None or split.replicas[o.name] <= max(booted, firm.replicas[o.name])
    assert place_speculative(0, dict(firm.replicas), offers, offers) == 0
