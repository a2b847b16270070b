"""The matched-SLO choice: the cheapest setting that meets the target, or the best SLO when none does."""

from __future__ import annotations

import pytest

from kgpu.sim.matched_slo import cheapest_meeting, settings


def row(slo: float, failed: int, gpu: float) -> dict:
    return {"slo_attainment_pct": slo, "failed_requests": failed, "gpu_hours": gpu}


def test_cheapest_setting_meeting_the_slo_with_no_failed_request_wins():
    results = {"a": row(99.5, 0, 5.0), "b": row(99.1, 0, 4.0), "c": row(99.9, 2, 1.0), "d": row(98.0, 0, 2.0)}
    assert cheapest_meeting(results) == ("b", True)


def test_without_a_setting_meeting_the_target_the_highest_slo_is_reported_as_missing():
    results = {"a": row(97.0, 0, 5.0), "b": row(98.5, 0, 6.0), "c": row(98.5, 0, 5.5)}
    assert cheapest_meeting(results) == ("c", False)


def test_each_policy_sweeps_its_own_knobs():
    kpa = settings("kpa")
    assert {s.stable_window_seconds for s in kpa.values()} >= {60.0, 1200.0}
    assert all(s.target_per_replica == s.target for s in kpa.values())
    hpa = settings("hpa")
    assert {s.scale_down_stabilization_seconds for s in hpa.values()} >= {0.0, 600.0}
    assert {s.min_replicas for s in settings("kgpu").values()} == {3, 4, 5, 6, 8}
    with pytest.raises(ValueError, match="no knobs to sweep for policy 'static'"):
        settings("static")
