"""The ceiling: kgpu's EmbeddingEngine called directly, no HTTP, no batcher, no queue.

Each batch size is run over the same sentence mix as the servers, tokenization included, for a fixed
duration after a warm-up; throughput is sentences per second and latency is the time of one
tokenize + embed call for the whole batch. serving.py runs this in its own process so the load
generator's process stays free of torch and the device memory is released before servers start.

Run: python bench/engine_ceiling.py --model-dir DIR --json-out PATH [--device ...] [--dtype ...] [--padded]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import percentile
from workload import DEFAULT_SEED, load_vocabulary, make_sentences

MIN_BATCHES = 3  # a slow batch size still yields a number instead of an empty window


def measure_batch_size(
    engine, sentences: list[str], batch_size: int, duration_s: float, warmup_s: float
) -> dict:
    latencies: list[float] = []
    k = 0

    def one_batch() -> float:
        nonlocal k
        batch = [sentences[(k + i) % len(sentences)] for i in range(batch_size)]
        k += batch_size
        t0 = time.perf_counter()
        engine.embed(engine.tokenize(batch))  # embed returns a host array, so device work has finished
        return time.perf_counter() - t0

    warm_until = time.perf_counter() + warmup_s
    one_batch()
    while time.perf_counter() < warm_until:
        one_batch()
    measure_until = time.perf_counter() + duration_s
    while time.perf_counter() < measure_until or len(latencies) < MIN_BATCHES:
        latencies.append(one_batch())
    sequences = len(latencies) * batch_size
    measured = sum(latencies)
    ordered = sorted(latencies)
    return {
        "batch_size": batch_size,
        "batches": len(latencies),
        # Over busy time: the loop does nothing but build the next batch list between calls.
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
        "--padded", action="store_true", help="keep the padded forward (compare with the unpadded one)"
    )
    args = parser.parse_args()

    from kgpu.serving.engine import EmbeddingEngine

    sentences = make_sentences(args.sentences, args.seed, load_vocabulary(args.model_dir))
    t0 = time.perf_counter()
    engine = EmbeddingEngine(args.model_dir, device=args.device, dtype=args.dtype, unpadded=not args.padded)
    load_s = time.perf_counter() - t0
    if hasattr(engine, "warmup"):
        engine.warmup()  # first-call costs (allocator, kernel selection) stay out of every batch size
    results = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        row = measure_batch_size(engine, sentences, batch_size, args.duration, args.warmup)
        print(f"engine batch {batch_size}: {row['seq_per_s']:.1f} seq/s, p50 {row['p50_ms']} ms", flush=True)
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
