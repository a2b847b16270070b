"""Cluster health: silent for the grace period means unavailable; one answer means available again."""

from __future__ import annotations

import pytest

from kgpu.controlplane.in_cluster import platform_config
from kgpu.multicluster.health import DEFAULT_GRACE_S, ClusterHealth


def test_a_cluster_is_lost_only_after_the_grace_period_and_back_at_its_first_answer():
    health = ClusterHealth(grace_s=10.0)
    assert health.available("ns/a")  # never heard of: nothing says otherwise
    assert health.answered("ns/a", 0.0) is None
    assert health.missed("ns/a", 1.0, "refused") is None
    assert health.missed("ns/a", 10.9, "refused") is None and health.available("ns/a")
    lost = health.missed("ns/a", 11.0, "connection refused")
    assert (lost.cluster, lost.available) == ("ns/a", False)
    assert lost.message == "cluster ns/a unavailable: no answer for 10.0 s (grace 10 s): connection refused"
    assert health.missed("ns/a", 30.0, "refused") is None  # said once
    assert health.unavailable() == {"ns/a"}
    back = health.answered("ns/a", 31.0)
    assert (back.available, back.message) == (True, "cluster ns/a available again: its backend answers")
    # A new silence counts from its own first miss, not from the old one.
    assert health.missed("ns/a", 32.0, "refused") is None
    assert health.missed("ns/a", 41.9, "refused") is None
    assert health.missed("ns/a", 42.0, "refused").available is False


def test_a_blip_shorter_than_the_grace_period_moves_nothing():
    health = ClusterHealth(grace_s=5.0)
    assert health.missed("ns/a", 0.0, "timeout") is None
    assert health.answered("ns/a", 4.0) is None
    assert health.missed("ns/a", 8.0, "timeout") is None  # the clock restarted at the answer
    assert health.available("ns/a")


def test_forgotten_clusters_and_bad_settings():
    health = ClusterHealth(grace_s=0.0)
    assert health.missed("ns/a", 0.0, "x").available is False  # no grace: lost at the first miss
    health.forget("ns/a")
    assert health.available("ns/a") and health.known() == []
    with pytest.raises(ValueError, match="grace period must be >= 0 s"):
        ClusterHealth(grace_s=-1)


def test_the_in_cluster_gateway_takes_the_grace_period_from_its_flag():
    assert platform_config([], environ={}).cluster_grace_s == DEFAULT_GRACE_S
    assert platform_config(["--cluster-grace", "30"], environ={}).cluster_grace_s == 30.0
