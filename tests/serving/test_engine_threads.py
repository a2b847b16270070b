"""Engine threads: only the primary may spread a call over several cores, and it takes calls first."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import httpx
import pytest
import torch

from kgpu.serving.app import create_app
from kgpu.serving.engine_threads import EngineThreads, may_fan_out

from .fakes import FakeEngine
from .helpers import SERVED, make_config, wait_ready


def _whoami() -> tuple[str, bool]:
    return threading.current_thread().name, may_fan_out()


async def test_a_call_alone_runs_on_the_primary_which_alone_may_fan_out() -> None:
    threads = EngineThreads(3)
    try:
        for _ in range(3):  # one after the other: always the primary
            name, fan_out = await threads.run(_whoami)
            assert name.startswith("kgpu-engine-0") and fan_out
        gate = threading.Event()

        def held() -> tuple[str, bool]:
            gate.wait(5)
            return _whoami()

        calls = [asyncio.create_task(threads.run(held)) for _ in range(3)]
        await asyncio.sleep(0.05)
        gate.set()
        seen = await asyncio.gather(*calls)
        assert sorted(name.rsplit("_", 1)[0] for name, _ in seen) == [
            "kgpu-engine-0",
            "kgpu-engine-1",
            "kgpu-engine-2",
        ]
        assert {name.rsplit("_", 1)[0]: fan_out for name, fan_out in seen} == {
            "kgpu-engine-0": True,
            "kgpu-engine-1": False,
            "kgpu-engine-2": False,
        }
    finally:
        threads.shutdown()
    assert may_fan_out()  # a thread that is no engine thread (tests, tools) is not limited


async def test_a_busy_thread_counts_until_it_finishes_even_when_its_caller_gave_up() -> None:
    threads = EngineThreads(2)
    gate = threading.Event()
    try:
        stuck = asyncio.create_task(threads.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        stuck.cancel()
        name, _ = await threads.run(_whoami)  # the primary still computes the abandoned call
        assert name.startswith("kgpu-engine-1")
        gate.set()
        await asyncio.sleep(0.05)
        name, _ = await threads.run(_whoami)
        assert name.startswith("kgpu-engine-0")
    finally:
        gate.set()
        threads.shutdown()


async def test_real_engine_uses_every_core_on_the_primary_and_one_on_a_secondary(engine) -> None:
    def torch_threads(gate: threading.Event | None = None) -> int:
        with engine._share_cpu():
            if gate is not None:
                gate.wait(5)
            return torch.get_num_threads()

    threads = EngineThreads(2)
    first, second = threading.Event(), threading.Event()
    try:
        alone = await threads.run(torch_threads)
        occupied = asyncio.create_task(threads.run(first.wait, 5))  # the primary, outside the engine
        await asyncio.sleep(0.05)
        secondary = asyncio.create_task(threads.run(torch_threads, second))
        await asyncio.sleep(0.05)
        first.set()
        await occupied
        beside_secondary = await threads.run(torch_threads)  # the primary again, one call running
        second.set()
        secondary_threads = await secondary
    finally:
        first.set()
        second.set()
        threads.shutdown()
    assert alone == engine._cpu_threads
    assert secondary_threads == 1
    assert beside_secondary == max(1, engine._cpu_threads // 2)


class _ThreadRecordingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.warmed_on: tuple[str, bool] | None = None

    def warmup(self) -> float:
        self.warmed_on = _whoami()
        return 0.0


async def test_the_replica_loads_and_warms_the_model_on_the_primary_engine_thread() -> None:
    engine = _ThreadRecordingEngine()
    loaded_on: list[tuple[str, bool]] = []

    def factory(_config) -> FakeEngine:
        loaded_on.append(_whoami())
        return engine

    app = create_app(make_config(), engine_factory=factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            await wait_ready(client)
            response = await client.post("/v1/embeddings", json={"model": SERVED, "input": "hello there"})
            assert response.status_code == 200
    for name, fan_out in (*loaded_on, engine.warmed_on):
        assert name.startswith("kgpu-engine-0") and fan_out


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ({}, "1000"),
        ({"GOMP_SPINCOUNT": "50000"}, "50000"),  # the user's choice stands
        ({"OMP_WAIT_POLICY": "active"}, None),
    ],
)
def test_the_replica_sets_a_brief_spin_before_torch_loads_unless_the_user_chose(preset, expected) -> None:
    probe = (
        "import os, sys\n"
        "import kgpu.serving.engine_threads as threads\n"
        "original, torch_before = threads.spin_briefly, []\n"
        "def recording():\n"
        "    torch_before.append('torch' in sys.modules)\n"
        "    original()\n"
        "threads.spin_briefly = recording\n"
        "import kgpu.serving.__main__\n"
        "print(os.environ.get('GOMP_SPINCOUNT'), torch_before, 'torch' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env | preset, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(expected), "[False]", "True"]  # set once, before torch loaded
