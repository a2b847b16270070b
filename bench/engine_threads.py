#!/usr/bin/env python3
"""Where the engine's CPU threads run, and what it costs a request alone (concurrency 1, in-process).

PyTorch's parallel operations run on GNU OpenMP (libgomp), which gives each thread that starts a parallel
region its own team of helper threads. Once the helpers it manages outnumber the cores, libgomp stops
letting them spin between operations and puts them to sleep after about a hundred spins; every operation
of a forward pass then waits for a helper to wake. This script measures single requests (one sentence,
10 ms apart, the 5-60-word sentences of bench/serving.py) in three layouts, each in a fresh process:

- ``main``: the model is loaded and every request computed on the main thread (one team);
- ``separate-threads``: loaded on the main thread, requests computed in turn on two worker threads: three
  teams, as in kgpu's replica before (loaded on one thread, batches on its two CPU engine workers) and
  behind a FastAPI ``def`` endpoint (its thread pool);
- ``engine-thread``: loaded, warmed up and computed on one engine thread, as the replica does now
  (kgpu.serving.engine_threads): one team.

Reported per layout: p50 and mean latency, their ratio to ``main`` measured in the same run, and context
switches per request (the process's voluntary and involuntary switches, all threads).

    .venv/bin/python -m bench.engine_threads [--requests 300] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common.machine import child_env, versions
from bench.common.model import model_dir
from bench.common.results import write_results
from bench.common.workload import DEFAULT_SEED, SENTENCE_POOL, load_vocabulary, make_sentences

BENCH_DIR = Path(__file__).resolve().parent

LAYOUTS = ("main", "separate-threads", "engine-thread")
console = Console(width=None if sys.stdout.isatty() else 132)


def _switches() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def measure(layout: str, requests: int, warmup: int, gap_s: float) -> dict:
    """One layout in this process (the parent runs each in a fresh one)."""
    from kgpu.serving.engine import EmbeddingEngine
    from kgpu.serving.engine_threads import EngineThreads

    mdir = model_dir()
    sentences = make_sentences(SENTENCE_POOL, DEFAULT_SEED, load_vocabulary(mdir))

    # The layouts differ in where the model is loaded and warmed up, and where requests compute.
    def here(fn, *args):
        return fn(*args)

    if layout == "engine-thread":
        threads, loop = EngineThreads(1), asyncio.new_event_loop()

        def on_engine_thread(fn, *args):
            return loop.run_until_complete(threads.run(fn, *args))

        set_up = compute = on_engine_thread
    elif layout == "separate-threads":
        workers, turns = [ThreadPoolExecutor(max_workers=1) for _ in range(2)], itertools.count()

        def in_turn(fn, *args):
            return workers[next(turns) % 2].submit(fn, *args).result()

        set_up, compute = here, in_turn
    else:
        set_up = compute = here

    engine = set_up(lambda: EmbeddingEngine(mdir, device="cpu", dtype="float32"))
    set_up(engine.warmup)

    def one(text: str) -> None:
        engine.embed(engine.tokenize([text]))

    latencies: list[float] = []
    switches_before = 0
    for index in range(warmup + requests):
        if index == warmup:
            switches_before = _switches()
        started = time.perf_counter()
        compute(one, sentences[index % len(sentences)])
        if index >= warmup:
            latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(gap_s)
    switches = _switches() - switches_before
    return {
        "layout": layout,
        "requests": requests,
        "p50_ms": statistics.median(latencies),
        "mean_ms": statistics.mean(latencies),
        "switches_per_request": switches / requests,
        "threads_alive": threading.active_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2, help="each layout this many times, in rotation")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "engine-threads-cpu.json")
    parser.add_argument("--layout", choices=LAYOUTS, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.gap_ms < 0 or args.rounds < 1:
        parser.error("--requests and --rounds must be >= 1, --warmup and --gap-ms >= 0")
    if args.layout is not None:
        print(json.dumps(measure(args.layout, args.requests, args.warmup, args.gap_ms / 1000)))
        return 0

    runs: list[dict] = []
    for round_index in range(args.rounds):
        for layout in LAYOUTS:
            command = [sys.executable, __file__, "--layout", layout, "--requests", str(args.requests)]
            command += ["--warmup", str(args.warmup), "--gap-ms", str(args.gap_ms)]
            console.print(f"round {round_index + 1}: {layout}")
            done = subprocess.run(command, env=child_env(), capture_output=True, text=True, check=False)
            if done.returncode != 0:
                console.print(done.stderr[-2000:])
                return 1
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]) | {"round": round_index + 1})

    table = Table(title="a request alone, in-process, by where the engine's threads run (cpu, float32)")
    for column in ("round", "layout", "p50 ms", "mean ms", "p50 / main", "switches / request"):
        table.add_column(column, justify="left" if column == "layout" else "right")
    for run in runs:
        main_run = next(r for r in runs if r["round"] == run["round"] and r["layout"] == "main")
        run["p50_ratio_to_main"] = run["p50_ms"] / main_run["p50_ms"]
        table.add_row(
            str(run["round"]),
            run["layout"],
            f"{run['p50_ms']:.2f}",
            f"{run['mean_ms']:.2f}",
            f"{run['p50_ratio_to_main']:.2f}",
            f"{run['switches_per_request']:.0f}",
        )
    console.print(table)
    write_results(args.json, "engine_threads", vars(args), {"versions": versions()}, runs=runs)
    console.print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
