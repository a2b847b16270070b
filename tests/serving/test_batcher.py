from __future__ import annotations

import asyncio
import random
import threading

import numpy as np
import pytest

from kgpu.serving.batcher import BatcherClosedError, BatchStats, DynamicBatcher, QueueFullError

from .conftest import SAMPLE_TEXTS
from .fakes import FakeEngine


async def _wait_for(event, timeout: float = 5.0) -> None:
    assert await asyncio.to_thread(event.wait, timeout), "engine was never called"


async def test_concurrent_requests_are_grouped_into_batches() -> None:
    engine = FakeEngine(delay=0.01)
    stats: list[BatchStats] = []
    batcher = DynamicBatcher(
        engine, max_batch_tokens=10_000, max_batch_size=64, max_queue=100, on_batch=stats.append
    )
    await batcher.start()
    results = await asyncio.gather(*(batcher.submit([[i + 1, 7]]) for i in range(40)))
    await batcher.stop()
    assert [int(r[0, 1]) for r in results] == [i + 1 for i in range(40)]
    assert len(engine.batches) < 40
    assert max(len(b) for b in engine.batches) > 1
    assert sum(s.size for s in stats) == 40
    assert sum(len(s.queue_seconds) for s in stats) == 40


async def test_token_budget_holds_except_for_one_oversized_sequence() -> None:
    engine = FakeEngine(delay=0.002)
    batcher = DynamicBatcher(engine, max_batch_tokens=64, max_batch_size=1000, max_queue=1000)
    await batcher.start()
    rng = random.Random(7)
    requests = [[[1] * rng.randint(1, 20) for _ in range(rng.randint(1, 4))] for _ in range(50)]
    requests.append([[2] * 100])  # longer than the whole budget: must still run, alone
    results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    await batcher.stop()
    for request, result in zip(requests, results, strict=True):
        assert result[:, 0].tolist() == [len(s) for s in request]
    for lengths in engine.batches:
        assert len(lengths) * max(lengths) <= 64 or len(lengths) == 1
    assert [100] in engine.batches


async def test_a_request_split_across_batches_keeps_its_order() -> None:
    engine = FakeEngine()
    batcher = DynamicBatcher(engine, max_batch_tokens=10_000, max_batch_size=3, max_queue=10)
    await batcher.start()
    ids = [[i, 0, 0][: 1 + i % 3] for i in range(1, 11)]
    result = await batcher.submit(ids)
    await batcher.stop()
    assert result[:, 1].tolist() == list(range(1, 11))
    assert result[:, 0].tolist() == [len(s) for s in ids]
    assert [len(b) for b in engine.batches] == [3, 3, 3, 1]


async def test_full_queue_refuses_at_once_then_recovers() -> None:
    engine = FakeEngine()
    batcher = DynamicBatcher(engine, max_batch_tokens=10_000, max_batch_size=1, max_queue=2)
    await batcher.start()
    engine.block()
    running = asyncio.create_task(batcher.submit([[1]]))
    await _wait_for(engine.entered)  # the first request left the queue and occupies the engine
    queued = [asyncio.create_task(batcher.submit([[2]])), asyncio.create_task(batcher.submit([[3]]))]
    await asyncio.sleep(0)
    assert batcher.depth == 2
    with pytest.raises(QueueFullError, match="2 requests"):
        await batcher.submit([[4]])
    engine.release.set()
    assert [int(r[0, 1]) for r in await asyncio.gather(running, *queued)] == [1, 2, 3]
    assert (await batcher.submit([[5]]))[0, 1] == 5
    await batcher.stop()


async def test_stop_drains_queued_work_and_then_refuses() -> None:
    engine = FakeEngine(delay=0.01)
    batcher = DynamicBatcher(engine, max_batch_tokens=8, max_batch_size=2, max_queue=100)
    await batcher.start()
    pending = [asyncio.create_task(batcher.submit([[i + 1, 1, 1]])) for i in range(10)]
    await asyncio.sleep(0)
    await batcher.stop()
    assert all(task.done() for task in pending)
    assert [int(task.result()[0, 1]) for task in pending] == list(range(1, 11))
    with pytest.raises(BatcherClosedError):
        await batcher.submit([[1]])


async def test_cancelled_clients_and_engine_errors_do_not_stop_the_loop() -> None:
    engine = FakeEngine()
    batcher = DynamicBatcher(engine, max_batch_tokens=10_000, max_batch_size=1, max_queue=10)
    await batcher.start()
    engine.block()
    first = asyncio.create_task(batcher.submit([[1]]))
    await _wait_for(engine.entered)
    abandoned = asyncio.create_task(batcher.submit([[2] * 5]))
    await asyncio.sleep(0)
    abandoned.cancel()
    first.cancel()  # cancelled while its batch computes: the result is dropped
    engine.release.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await batcher.submit([[9]]))[0, 1] == 9  # the worker finished the cancelled batch and goes on
    engine.fail_next = True
    with pytest.raises(RuntimeError, match="device lost"):
        await batcher.submit([[3]])
    assert (await batcher.submit([[4]]))[0, 1] == 4
    assert [5] not in engine.batches and len(engine.batches) == 4  # the abandoned request never ran
    await batcher.stop()


async def test_empty_submit_and_invalid_limits() -> None:
    batcher = DynamicBatcher(FakeEngine(), max_batch_tokens=16, max_batch_size=4, max_queue=4)
    with pytest.raises(BatcherClosedError):
        await batcher.submit([[1]])
    await batcher.start()
    assert (await batcher.submit([])).shape == (0, 4)
    await batcher.stop()
    with pytest.raises(ValueError, match=">= 1"):
        DynamicBatcher(FakeEngine(), max_batch_tokens=0, max_batch_size=4, max_queue=4)
    with pytest.raises(ValueError, match="workers must all be >= 1"):
        DynamicBatcher(FakeEngine(), workers=0)


async def test_real_engine_batched_results_equal_direct_results(engine) -> None:
    stats: list[BatchStats] = []
    batcher = DynamicBatcher(
        engine, max_batch_tokens=2048, max_batch_size=64, max_queue=64, on_batch=stats.append
    )
    await batcher.start()
    ids = engine.tokenize(SAMPLE_TEXTS)
    results = await asyncio.gather(*(batcher.submit([sequence]) for sequence in ids))
    await batcher.stop()
    direct = engine.embed(ids)
    np.testing.assert_allclose(np.concatenate(results), direct, atol=1e-4)
    assert all(s.padded_tokens <= 2048 or s.size == 1 for s in stats)


class _CountingEngine(FakeEngine):
    """Records how many embed calls overlap, and which threads ran them."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay=delay)
        self._lock = threading.Lock()
        self.active = 0
        self.most_active = 0
        self.threads: set[int] = set()

    def embed(self, batch):
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.threads.add(threading.get_ident())
        try:
            return super().embed(batch)
        finally:
            with self._lock:
                self.active -= 1


async def test_workers_compute_that_many_batches_at_once_and_no_more() -> None:
    engine = _CountingEngine(delay=0.02)
    batcher = DynamicBatcher(engine, max_batch_size=2, max_queue=100, workers=3)
    await batcher.start()
    assert batcher.workers == 3
    results = await asyncio.gather(*(batcher.submit([[i + 1, 5], [i + 1]]) for i in range(30)))
    await batcher.stop()
    for i, result in enumerate(results):  # each request's rows, in order, whichever worker ran them
        assert result[:, 1].tolist() == [i + 1, i + 1] and result[:, 0].tolist() == [2, 1]
    assert engine.most_active == 3
    assert len(engine.threads) == 3


async def test_one_worker_computes_one_batch_at_a_time() -> None:
    engine = _CountingEngine(delay=0.01)
    batcher = DynamicBatcher(engine, max_batch_size=1, max_queue=100)
    await batcher.start()
    await asyncio.gather(*(batcher.submit([[i + 1]]) for i in range(10)))
    await batcher.stop()
    assert engine.most_active == 1 and len(engine.batches) == 10


async def test_stop_timeout_fails_the_batches_still_computing() -> None:
    engine = FakeEngine()
    engine.block()
    batcher = DynamicBatcher(engine, max_batch_size=1, workers=2)
    await batcher.start()
    first = asyncio.create_task(batcher.submit([[1]]))
    second = asyncio.create_task(batcher.submit([[2]]))
    third = asyncio.create_task(batcher.submit([[3]]))
    await _wait_for(engine.entered)
    await batcher.stop(timeout=0.2)
    for task in (first, second, third):
        with pytest.raises(BatcherClosedError):
            await task
    engine.release.set()


async def test_a_request_alone_is_prepared_and_embedded_in_one_engine_call() -> None:
    engine = FakeEngine()
    stats: list[BatchStats] = []
    batcher = DynamicBatcher(engine, max_batch_tokens=100, max_batch_size=4, on_batch=stats.append)
    await batcher.start()
    prepared_on: list[str] = []

    def prepare() -> list[list[int]]:
        prepared_on.append(threading.current_thread().name)
        return engine.tokenize(["one two", "three"])

    ids, vectors = await batcher.prepare_and_embed(prepare, count=2, longest=10)
    await batcher.stop()
    assert ids == [[101, 3, 3, 102], [101, 5, 102]]
    assert vectors[:, 0].tolist() == [4, 3]
    assert prepared_on and prepared_on[0].startswith("kgpu-engine-0")  # off the event loop
    assert engine.batches == [[4, 3]]
    assert len(stats) == 1 and stats[0].size == 2 and stats[0].queue_seconds == [0.0]


async def test_prepare_and_embed_declines_when_no_worker_is_free_or_it_would_not_fit() -> None:
    engine = FakeEngine()
    engine.block()
    batcher = DynamicBatcher(engine, max_batch_tokens=100, max_batch_size=4, workers=1)
    await batcher.start()

    def prepare() -> list[list[int]]:
        raise AssertionError("must not run")

    assert await batcher.prepare_and_embed(prepare, count=5, longest=1) is None  # > max_batch_size
    assert await batcher.prepare_and_embed(prepare, count=2, longest=51) is None  # > max_batch_tokens
    computing = asyncio.create_task(batcher.submit([[1]]))
    await _wait_for(engine.entered)
    assert await batcher.prepare_and_embed(prepare, count=1, longest=1) is None  # no free worker
    engine.release.set()
    await computing
    await batcher.stop()
    assert await batcher.prepare_and_embed(prepare, count=1, longest=1) is None  # stopped


async def test_a_failure_while_preparing_alone_fails_that_request_only() -> None:
    engine = FakeEngine()
    batcher = DynamicBatcher(engine, max_batch_tokens=100, max_batch_size=4, workers=2)
    await batcher.start()

    def broken() -> list[list[int]]:
        raise RuntimeError("tokenizer exploded")

    with pytest.raises(RuntimeError, match="tokenizer exploded"):
        await batcher.prepare_and_embed(broken, count=1, longest=4)
    result = await batcher.submit([[7, 7]])  # the batcher still serves
    await batcher.stop()
    assert result[0, :2].tolist() == [2, 7]


@pytest.mark.parametrize(("workers", "largest_after_backlog"), [(1, 256), (2, 150), (4, 75)])
async def test_a_backlog_is_shared_out_over_the_workers(workers: int, largest_after_backlog: int) -> None:
    engine = FakeEngine()
    engine.block()
    batcher = DynamicBatcher(engine, max_batch_size=256, max_queue=1000, workers=workers)
    await batcher.start()
    busy = []
    for i in range(workers):  # one blocked call on every worker
        busy.append(asyncio.create_task(batcher.submit([[i + 1]])))
        for _ in range(500):
            if len(engine.batches) == i + 1:
                break
            await asyncio.sleep(0.01)
    assert len(engine.batches) == workers
    backlog = [asyncio.create_task(batcher.submit([[i + 1, 7]])) for i in range(300)]
    await asyncio.sleep(0.05)  # all queued behind the busy workers
    engine.release.set()
    results = await asyncio.gather(*busy, *backlog)
    await batcher.stop()
    assert [row[1] for result in results[workers:] for row in result.tolist()] == list(range(1, 301))
    after_backlog = engine.batches[workers:]
    assert sum(len(batch) for batch in after_backlog) == 300
    # One worker takes all it may (max_batch_size); several split the backlog evenly.
    assert max(len(batch) for batch in after_backlog) == largest_after_backlog
