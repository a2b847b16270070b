"""The paired latency summary of bench.command_overhead: the p50 added, its bootstrap interval, the
median of paired differences (arithmetic checked by hand on small inputs)."""

from __future__ import annotations

import pytest

from bench.common.latency_pairs import added_p50


def test_a_constant_shift_is_found_exactly_with_a_tight_interval():
    base = [10.0, 11.0, 12.0, 13.0, 14.0]
    summary = added_p50(base, [x + 0.5 for x in base])
    assert summary["p50_added_ms"] == 0.5
    assert summary["median_paired_difference_ms"] == 0.5
    assert summary["ci95_ms"] == [0.5, 0.5]  # every resample of the pairs shifts by the same


def test_the_interval_covers_the_estimate_and_widens_with_noise():
    base = [float(i) for i in range(200)]
    noisy = [x + (5.0 if i % 2 else -4.0) for i, x in enumerate(base)]
    summary = added_p50(base, noisy)
    low, high = summary["ci95_ms"]
    assert low <= summary["p50_added_ms"] <= high and high - low > 0.5
    assert summary["median_paired_difference_ms"] in (-4.0, 0.5, 5.0)


def test_unpaired_inputs_are_refused():
    with pytest.raises(ValueError, match="same number"):
        added_p50([1.0, 2.0], [1.0])
