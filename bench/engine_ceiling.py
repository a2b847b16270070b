"""The ceiling: kgpu's EmbeddingEngine called directly, no HTTP, no batcher, no queue.

Each batch size is run over the same sentence mix as the servers, tokenization included, for a fixed
duration after a warm-up; throughput is sentences per second and latency is the time of one
tokenize + embed call for the whole batch. Each batch size runs with one caller and with as many
concurrent callers as a replica has engine workers on this device, so the ceiling is the engine's
best layout, not only its best batch size. The engine is loaded, warmed up and called on the replica's
engine threads (kgpu.serving.engine_threads): on CPUs, where a call runs decides how fast it is.
serving.py runs this in its own process so the load generator's process stays free of torch and the
device memory is released before servers start.

Run: python -m bench.engine_ceiling --model-dir DIR --json-out PATH [--device ...] [--dtype ...] [--padded]
     [--workers 1,auto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


from bench.common.loadgen import percentile
from bench.common.workload import DEFAULT_SEED, load_vocabulary, make_sentences

MIN_BATCHES = 3  # a slow batch size still yields a number instead of an empty window


def on_engine_threads(threads, fn, *args):
    """``fn(*args)`` on the primary engine thread, where the replica loads and warms up its engine."""
    return asyncio.run(threads.run(fn, *args))


def measure_batch_size(
    engine,
    sentences: list[str],
    batch_size: int,
    duration_s: float,
    warmup_s: float,
    workers: int = 1,
    threads=None,
) -> dict:
    """Sequences/s of ``workers`` engine threads each embedding batches of ``batch_size`` back to back.

    One worker is the engine alone; several are the replica's engine workers (the batcher computes
    that many batches at once; the engine shares the CPU threads among calls running together).
    ``threads``: the replica's EngineThreads (at least ``workers``); new ones when None.
    """
    from kgpu.serving.engine_threads import EngineThreads

    own_threads = threads is None
    threads = threads or EngineThreads(workers)
    threads.grow(workers)
    latencies: list[list[float]] = [[] for _ in range(workers)]
    windows: list[tuple[float, float]] = []

    def one_batch(k: int) -> float:
        batch = [sentences[(k + i) % len(sentences)] for i in range(batch_size)]
        t0 = time.perf_counter()
        engine.embed(engine.tokenize(batch))  # embed returns a host array, so device work has finished
        return time.perf_counter() - t0

    def worker_loop(worker: int, warm_until: float, measure_until: float) -> None:
        k = worker * len(sentences) // workers  # workers start at different sentences
        one_batch(k)
        while time.perf_counter() < warm_until:
            k += batch_size
            one_batch(k)
        started = time.perf_counter()
        mine = latencies[worker]
        while time.perf_counter() < measure_until or len(mine) < MIN_BATCHES:
            k += batch_size
            mine.append(one_batch(k))
        windows.append((started, time.perf_counter()))

    warm_until = time.perf_counter() + warmup_s
    measure_until = warm_until + duration_s

    async def all_workers() -> None:  # started together, so each gets its own engine thread
        await asyncio.gather(
            *(threads.run(worker_loop, w, warm_until, measure_until) for w in range(workers))
        )

    asyncio.run(all_workers())
    if own_threads:
        threads.shutdown()
    ordered = sorted(x for mine in latencies for x in mine)
    sequences = len(ordered) * batch_size
    # Wall time from the first measured batch to the last one's end: with one worker the loop does
    # nothing between calls but build the next batch list, so this is its busy time.
    measured = max(end for _, end in windows) - min(start for start, _ in windows)
    return {
        "batch_size": batch_size,
        "workers": workers,
        "batches": len(ordered),
        "seq_per_s": round(sequences / measured, 2) if measured else 0.0,
        "p50_ms": round(percentile(ordered, 0.5) * 1000, 3) if ordered else None,
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 3) if ordered else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--json-out", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-sizes", default="1,8,32,64,128")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--sentences", type=int, default=4096)
    parser.add_argument(
        "--workers",
        default="1,auto",
        help="engine workers computing batches at once; auto: what a replica uses on this device",
    )
    parser.add_argument(
        "--padded", action="store_true", help="keep the padded forward (compare with the unpadded one)"
    )
    args = parser.parse_args()

    from kgpu.serving.engine_threads import EngineThreads, spin_briefly

    spin_briefly()  # as the replica does, before torch loads
    from kgpu.serving.engine import EmbeddingEngine

    sentences = make_sentences(args.sentences, args.seed, load_vocabulary(args.model_dir))
    threads = EngineThreads()
    t0 = time.perf_counter()
    engine = on_engine_threads(
        threads,
        lambda: EmbeddingEngine(
            args.model_dir, device=args.device, dtype=args.dtype, unpadded=not args.padded
        ),
    )
    load_s = time.perf_counter() - t0
    # First-call costs (allocator, kernel selection) stay out of every batch size.
    on_engine_threads(threads, engine.warmup)
    layouts = [engine.default_workers() if w.strip() == "auto" else int(w) for w in args.workers.split(",")]
    results = []
    for workers in dict.fromkeys(layouts):  # in order, once each
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            row = measure_batch_size(
                engine, sentences, batch_size, args.duration, args.warmup, workers, threads
            )
            print(
                f"engine batch {batch_size} x{workers} worker(s): {row['seq_per_s']:.1f} seq/s, "
                f"p50 {row['p50_ms']} ms",
                flush=True,
            )
            results.append(row)
    report = {
        "engine": {
            "name": str(engine.name),
            "device": str(engine.device),
            "dtype": str(engine.dtype),
            "dim": int(engine.dim),
            "max_seq_len": int(engine.max_seq_len),
            "load_s": round(load_s, 2),
            "unpadded": engine.unpadded,
        },
        "batch_sizes": results,
    }
    Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
