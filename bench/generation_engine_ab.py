#!/usr/bin/env python3
"""Engine settings compared on fixed work, taking turns, and where a continuous-batching step's CPU time goes.

bench/generation.py runs each contender for a window of wall-clock time, which on a shared 2-core machine moves
by tens of percent with whatever else runs. This script gives every setting the same work instead (the first
`--requests` items of bench/generation.py's workload, `--concurrency` at a time, until the last answer ends;
kgpu's engine in this process, no HTTP) and runs the settings in turn, `--rounds` times (A, B, A, B, ...), after
one untimed run that pays the process's one-time costs. Per run it reports tokens/s and the process's CPU
seconds (user + system, every thread): other work on the machine stretches the wall clock much more than the
CPU time the same work needs.

A setting is a `+`-joined list of `key=value`: `attention=auto|sdpa|varlen|eager` (the engine's attention),
`threads=N` (`torch.set_num_threads`), `chunk=N` (prefill chunk tokens), `gqa=1` (transformers' own switch
`TRANSFORMERS_SDPA_FORCE_GQA`: SDPA reads the key/value heads as they are instead of copying them to every
query head). `--profile SETTING` first runs the work once under torch.profiler on the engine's loop thread and
prints its CPU time by operation and by kind (matrix products, attention, cache reads and writes, copies,
the step's own Python, the rest).

    .venv/bin/python -m bench.generation_engine_ab --settings attention=sdpa,attention=varlen --rounds 3 \\
        --profile attention=sdpa --json bench/results/generation-engine-ab-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import threading
from pathlib import Path

from kgpu.serving.engine_threads import spin_briefly

spin_briefly()  # as bench/generation.py

import torch  # noqa: E402

from bench.common.results import write_results  # noqa: E402
from bench.generation import BENCH_DIR, model_and_workload, summarize  # noqa: E402
from bench.generation import parse_args as workload_args  # noqa: E402
from bench.generation_bound import fixed_work  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()
GQA_SWITCH = "TRANSFORMERS_SDPA_FORCE_GQA"
# Operations by kind, for the profile's summary (self CPU time of each aten operation).
KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention": (
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_attention_math",
    ),
    "cache reads and gathers": ("aten::index_select", "aten::index"),
    "cache writes": ("aten::index_copy_",),
    "copies": ("aten::copy_", "aten::clone", "aten::contiguous"),
}
STEP = "kgpu::step"  # the profiler range around each step: its self time is the step's Python


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default="attention=sdpa,attention=varlen")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", default=None, help="a setting to profile once before the rounds")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "generation-engine-ab-cpu.json")
    args, rest = parser.parse_known_args(argv)
    args.workload = workload_args(rest)  # bench/generation.py's model and workload options
    return args


def engine_options(setting: str) -> dict:
    """Apply a setting's process-wide parts and return the engine's arguments."""
    options: dict = {"device": "cpu"}
    torch.set_num_threads(DEFAULT_THREADS)
    os.environ.pop(GQA_SWITCH, None)
    for part in filter(None, setting.split("+")):
        key, _, value = part.partition("=")
        if key == "attention":
            options["attention"] = value
        elif key == "chunk":
            options["prefill_chunk_tokens"] = int(value)
        elif key == "threads":
            torch.set_num_threads(int(value))
        elif key == "gqa":
            if value == "1":
                os.environ[GQA_SWITCH] = "1"
        else:
            raise SystemExit(f"unknown setting {part!r} (attention, chunk, threads, gqa)")
    return options


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(model_dir: Path, items: list, setting: str, concurrency: int, prepare=None) -> dict:
    from kgpu.serving.generation_engine import GenerationEngine

    engine = GenerationEngine(model_dir, **engine_options(setting))
    if prepare is not None:
        prepare(engine)
    engine.start()
    engine.warmup()
    started = cpu_seconds()
    try:
        answers, wall = asyncio.run(fixed_work(engine, items, concurrency))
    finally:
        engine.stop()
    return {
        "setting": setting,
        **summarize(answers, wall),
        "cpu_s": round(cpu_seconds() - started, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def profile_loop(engine, into: dict) -> None:
    """Profile the engine's loop thread for its whole life (a profiler starts and stops on the thread it
    records), each step in a `STEP` range; the loop's idle waits run no operations."""
    manager = engine._manager
    loop, step = manager._run_generation_loop, manager._generation_step

    def profiled_loop(**kwargs) -> None:
        try:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
                loop(**kwargs)
            into["profiler"] = profiler
        finally:
            into["done"].set()  # closing the profiler outlasts the engine's stop timeout

    def profiled_step() -> None:
        with torch.profiler.record_function(STEP):
            step()

    into["done"] = threading.Event()
    manager._run_generation_loop, manager._generation_step = profiled_loop, profiled_step


def breakdown(averages) -> dict:
    """Self CPU time (ms) by kind and the largest operations."""
    total = sum(event.self_cpu_time_total for event in averages) / 1000
    kinds = dict.fromkeys([*KINDS, "step's own Python", "other operations"], 0.0)
    for event in averages:
        ms = event.self_cpu_time_total / 1000
        kind = next((k for k, names in KINDS.items() if event.key in names), None)
        kind = kind or ("step's own Python" if event.key == STEP else "other operations")
        kinds[kind] += ms
    top = sorted(averages, key=lambda event: event.self_cpu_time_total, reverse=True)[:12]
    return {
        "total_ms": round(total, 1),
        "kinds_ms": {kind: round(ms, 1) for kind, ms in kinds.items()},
        "kinds_share": {kind: round(ms / total, 3) for kind, ms in kinds.items()},
        "top_operations": [
            {"name": e.key, "self_ms": round(e.self_cpu_time_total / 1000, 1), "calls": e.count} for e in top
        ],
        "steps": next((e.count for e in averages if e.key == STEP), 0),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir, items = model_and_workload(args.workload)
    work = items[: args.requests]
    settings = [s for s in args.settings.split(",") if s]
    profile = None
    if args.profile:
        collected: dict = {}
        row = run(model_dir, work, args.profile, args.concurrency, lambda e: profile_loop(e, collected))
        collected["done"].wait()
        profile = {"setting": args.profile, "run": row, **breakdown(collected["profiler"].key_averages())}
        print(
            f"profile of {args.profile}: {profile['steps']} steps, {profile['total_ms']:.0f} ms self CPU time"
        )
        for kind, ms in profile["kinds_ms"].items():
            print(f"  {kind:<26}{ms:>10.0f} ms {profile['kinds_share'][kind]:>7.1%}")
    run(model_dir, items[:16], settings[0], args.concurrency)  # untimed: the process's one-time costs
    rows = []
    for round_ in range(args.rounds):
        for setting in settings:
            row = {"round": round_, **run(model_dir, work, setting, args.concurrency)}
            rows.append(row)
            print(f"round {round_} {setting:<32}{row['tokens_per_s']:>8} tokens/s {row['cpu_s']:>7} CPU s "
                  f"ITL p50/p99 {row['itl_p50_ms']}/{row['itl_p99_ms']} ms load {row['load_average_1m']}",
                  flush=True)  # fmt: skip
    pairings = []
    base = settings[0]
    for round_ in range(args.rounds):
        by = {row["setting"]: row for row in rows if row["round"] == round_}
        for setting in settings[1:]:
            pairings.append({
                "round": round_, "setting": setting, "against": base,
                "tokens_per_s_ratio": round(by[setting]["tokens_per_s"] / by[base]["tokens_per_s"], 3),
                "cpu_s_ratio": round(by[setting]["cpu_s"] / by[base]["cpu_s"], 3),
            })  # fmt: skip
    print(f"{'round':<7}{'setting':<32}{'tokens/s ratio':>16}{'CPU s ratio':>13}  (against {base})")
    for pairing in pairings:
        print(f"{pairing['round']:<7}{pairing['setting']:<32}{pairing['tokens_per_s_ratio']:>16}"
              f"{pairing['cpu_s_ratio']:>13}")  # fmt: skip
    machine = {"cpus": os.cpu_count(), "torch": torch.__version__}
    write_results(args.json, "generation_engine_ab", {**vars(args), "model_dir": model_dir}, machine,
                  profile=profile, runs=rows, pairings=pairings)  # fmt: skip
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
