"""Trace versions: halves, rescaled arrivals and shuffled bursts keep the requests they should."""

from __future__ import annotations

import itertools

import pytest

from kgpu.sim.azure_trace import TraceRequest
from kgpu.sim.trace_versions import ALL_VERSIONS, HELD_OUT, VERSIONS, bursts, trace_version


def burst(start: float, n: int, context: int) -> list[TraceRequest]:
    return [TraceRequest(start + i * 0.5, context, 0) for i in range(n)]


# Three bursts (2, 3 and 4 requests) with silences of 30 s and 61 s between them.
TRACE = burst(0.0, 2, 100) + burst(30.5, 3, 200) + burst(92.5, 4, 300)


def test_bursts_are_cut_at_silences_of_ten_seconds():
    assert [len(b) for b in bursts(TRACE)] == [2, 3, 4]


def test_shuffled_bursts_keep_their_timing_and_the_silences_their_order():
    shuffled = trace_version(TRACE, "hour-shuffled")
    assert sorted(r.context_tokens for r in shuffled) == sorted(r.context_tokens for r in TRACE)
    groups = bursts(shuffled)
    assert sorted(len(b) for b in groups) == [2, 3, 4]
    for group in groups:  # each burst keeps its spacing and its requests
        assert [r.arrival_s - group[0].arrival_s for r in group] == [i * 0.5 for i in range(len(group))]
        assert len({r.context_tokens for r in group}) == 1
    silences = [b[0].arrival_s - a[-1].arrival_s for a, b in itertools.pairwise(groups)]
    assert silences == [30.0, 61.0]
    assert shuffled[0].arrival_s == 0.0


def test_halves_and_rescaled_arrivals():
    first, second = trace_version(TRACE, "first-half"), trace_version(TRACE, "second-half")
    assert len(first) + len(second) == len(TRACE) and second[0].arrival_s == 0.0
    assert [r.arrival_s for r in trace_version(TRACE, "x0.5")] == [r.arrival_s * 0.5 for r in TRACE]
    assert trace_version(TRACE, "x1.25")[-1].arrival_s == pytest.approx(94.0 * 1.25)
    assert "hour-shuffled" in VERSIONS
    with pytest.raises(ValueError, match="unknown trace version 'x2'"):
        trace_version(TRACE, "x2")


def test_held_out_versions_are_more_rescalings_and_other_shuffles():
    assert not set(HELD_OUT) & set(VERSIONS) and ALL_VERSIONS == VERSIONS + HELD_OUT
    assert [r.arrival_s for r in trace_version(TRACE, "x0.65")] == [r.arrival_s * 0.65 for r in TRACE]
    orders = {
        name: [r.context_tokens for r in trace_version(TRACE, name)]
        for name in ("hour-shuffled", "hour-shuffled-seed7", "hour-shuffled-seed99")
    }
    assert all(sorted(order) == sorted(r.context_tokens for r in TRACE) for order in orders.values())
    assert len({tuple(order) for order in orders.values()}) > 1  # the seeds order the bursts differently
