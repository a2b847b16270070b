"""The whole Azure trace replays quickly and drops no request under kgpu's policy."""

from __future__ import annotations

import time

import pytest

from kgpu.sim.azure_trace import DEFAULT_TRACE, load_azure_trace
from kgpu.sim.replay import replay

pytestmark = pytest.mark.skipif(not DEFAULT_TRACE.is_file(), reason="Azure trace not in ../shared/data")


def test_kgpu_replays_the_trace_without_failures_in_seconds():
    trace = load_azure_trace()
    assert len(trace) == 8819
    started = time.perf_counter()
    result = replay(trace, "kgpu")
    assert time.perf_counter() - started < 10
    assert result.completed == 8819 and result.failed_requests == 0
    assert result.gpu_hours > 0 and result.node_hours >= result.duration_s / 3600 * 0.99
