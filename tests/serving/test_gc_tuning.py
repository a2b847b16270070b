"""A replica keeps what it loaded out of the garbage collector's scans before it reports ready."""

from __future__ import annotations

import gc

import pytest

from kgpu.gc_tuning import freeze_what_is_loaded

from .fakes import FakeEngine
from .helpers import serving


@pytest.fixture
def default_gc():
    """Start from Python's defaults (nothing frozen) and restore the session's settings afterwards."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_the_replica_freezes_what_it_loaded_before_it_reports_ready(default_gc) -> None:
    async with serving(FakeEngine()) as (_, client):
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (20_000, 20, 20)


def test_frozen_objects_leave_the_generations_a_collection_scans(default_gc) -> None:
    # A large graph of long-lived objects, like a loaded model's modules and parameters.
    graph = [{"index": i, "children": [[i], (i,)]} for i in range(50_000)]
    gc.collect()
    scanned_before = sum(len(gc.get_objects(generation)) for generation in range(3))
    freeze_what_is_loaded()
    scanned_after = sum(len(gc.get_objects(generation)) for generation in range(3))
    assert scanned_before > len(graph) * 3
    assert gc.get_freeze_count() >= len(graph) * 3
    assert scanned_after < 1_000
    del graph
