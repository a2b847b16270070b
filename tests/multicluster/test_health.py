"""Cluster health: suspect at the first miss, unavailable after the grace period, healthy at one answer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgpu.controlplane.in_cluster import platform_config
from kgpu.multicluster.health import DEFAULT_GRACE_S, HEALTHY, SUSPECT, UNAVAILABLE, ClusterHealth


def test_a_cluster_is_suspect_at_its_first_miss_lost_after_the_grace_period_and_back_at_its_first_answer():
    health = ClusterHealth(grace_s=10.0)
    assert health.state("ns/a") == HEALTHY and health.trusted("ns/a")  # never heard of
    assert health.answered("ns/a", 0.0) is None
    suspect = health.missed("ns/a", 1.0, "refused")
    assert (suspect.cluster, suspect.was, suspect.state, suspect.trusted) == ("ns/a", HEALTHY, SUSPECT, False)
    assert suspect.message.startswith("cluster ns/a suspect: no answer (refused)")
    # Not trusted (no routing, replicas not counted), but not lost: its replicas are kept.
    assert not health.trusted("ns/a") and health.available("ns/a")
    assert health.missed("ns/a", 10.9, "refused") is None  # said once
    lost = health.missed("ns/a", 11.0, "connection refused")
    assert (lost.was, lost.state) == (SUSPECT, UNAVAILABLE)
    assert lost.message == "cluster ns/a unavailable: no answer for 10.0 s (grace 10 s): connection refused"
    assert health.missed("ns/a", 30.0, "refused") is None  # said once
    assert health.unavailable() == {"ns/a"} and not health.available("ns/a")
    back = health.answered("ns/a", 31.0)
    assert (back.was, back.state, back.message) == (
        UNAVAILABLE,
        HEALTHY,
        "cluster ns/a available again: its backend answers",
    )
    # A new silence counts from its own first miss, not from the old one.
    assert health.missed("ns/a", 32.0, "refused").state == SUSPECT
    assert health.missed("ns/a", 41.9, "refused") is None
    assert health.missed("ns/a", 42.0, "refused").state == UNAVAILABLE


def test_a_blip_shorter_than_the_grace_period_is_suspect_then_healthy_and_never_lost():
    health = ClusterHealth(grace_s=5.0)
    assert health.missed("ns/a", 0.0, "timeout").state == SUSPECT
    back = health.answered("ns/a", 4.0)
    assert (back.was, back.state) == (SUSPECT, HEALTHY)
    assert back.message == "cluster ns/a healthy again within its grace period: its backend answers"
    assert health.missed("ns/a", 8.0, "timeout").state == SUSPECT  # the clock restarted at the answer
    assert health.missed("ns/a", 12.9, "timeout") is None and health.available("ns/a")


def test_forgotten_clusters_and_bad_settings():
    health = ClusterHealth(grace_s=0.0)
    lost = health.missed("ns/a", 0.0, "x")  # no grace: lost at the first miss, no suspect step
    assert (lost.was, lost.state) == (HEALTHY, UNAVAILABLE)
    health.forget("ns/a")
    assert health.trusted("ns/a") and health.known() == []
    with pytest.raises(ValueError, match="grace period must be >= 0 s"):
        ClusterHealth(grace_s=-1)


def test_the_in_cluster_gateway_takes_the_grace_period_from_its_flag():
    assert platform_config([], environ={}).cluster_grace_s == DEFAULT_GRACE_S
    assert platform_config(["--cluster-grace", "30"], environ={}).cluster_grace_s == 30.0


# A heartbeat: (seconds since the last one, answered?).
beats = st.lists(st.tuples(st.floats(0.0, 8.0, allow_nan=False), st.booleans()), max_size=40)


@settings(max_examples=300, deadline=None)
@given(grace=st.sampled_from([0.0, 2.0, 5.0, 10.0]), heartbeats=beats)
def test_the_state_follows_the_silence_and_every_change_is_reported_once(grace, heartbeats):
    health = ClusterHealth(grace_s=grace)
    now, first_miss, state = 0.0, None, HEALTHY
    for gap, answered in heartbeats:
        now += gap
        change = health.answered("c", now) if answered else health.missed("c", now, "down")
        if answered:
            first_miss, expected = None, HEALTHY
        else:
            first_miss = now if first_miss is None else first_miss
            expected = UNAVAILABLE if now - first_miss >= grace else SUSPECT
            if state == UNAVAILABLE:
                expected = UNAVAILABLE  # lost stays lost until an answer
        # The state is a function of the silence so far; a transition exactly when it changes.
        assert health.state("c") == expected
        if expected == state:
            assert change is None
        else:
            assert (change.was, change.state, change.cluster) == (state, expected, "c")
        assert health.trusted("c") == (expected == HEALTHY)
        assert health.available("c") == (expected != UNAVAILABLE)
        state = expected
