#!/usr/bin/env python3
"""Event-loop CPU per request: the serial part of kgpu's gateway and of its replica.

kgpu's gateway and each replica answer HTTP on one event loop, one thread each. Whatever that thread
spends on a request bounds the process's request rate however fast the GPU is: at most 1 / (its CPU
seconds per request). With 32 inputs per request a GPU's forward pass costs little, so these two
ceilings are what stands between kgpu and the 30,000 embeddings/s target. This script drives kgpu
through its gateway with closed-loop clients (as `bench/serving.py` does), reads the main thread's CPU
time of the gateway process and of the replica from /proc before and after the window, and reports
CPU ms per request for each and the request rate that would saturate its loop. Other threads (engine,
tokenizer, and the GPU's work) are shown as well; they run beside the loop.

    .venv/bin/python -m bench.loop_cpu [--inputs 32] [--concurrency 32] [--duration 6] [--device cpu|cuda]

`--model-dir DIR` serves another model directory: the example cut to no transformer layers
(`bench/common/model.py --layers 0 --out DIR`) keeps a CPU's engine threads from crowding the loops.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common.loadgen import run_closed_loop
from bench.common.machine import machine_facts
from bench.common.model import check_model_dir, model_dir
from bench.common.results import write_results
from bench.common.servers import replica_url, server_settings, started_servers
from bench.common.workload import workload_bodies

BENCH_DIR = Path(__file__).resolve().parent

console = Console(width=None if sys.stdout.isatty() else 132)
TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid``, by thread id."""
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended between the listing and the read
            continue
        fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
        times[int(tid)] = (int(fields[11]) + int(fields[12])) / TICKS
    return times


def descendants(pid: int) -> list[int]:
    children = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            children += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return children + [d for child in children for d in descendants(child)]


def replica_pid(gateway_pid: int) -> int:
    """The replica process kgpu started (``python -m kgpu.serving ...``) under the gateway's process."""
    for pid in descendants(gateway_pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kgpu.serving" in command:
            return pid
    raise RuntimeError(f"no kgpu.serving process under pid {gateway_pid}")


def split_cpu(before: dict[int, float], after: dict[int, float], main: int) -> tuple[float, float]:
    """(main thread, all other threads) CPU seconds between two readings; a thread that ended in between
    is missed (/proc lists living threads only), which kgpu's long-lived loop and worker threads are not."""
    spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = spent.pop(main, 0.0)
    return loop, sum(spent.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", type=int, default=32, help="sentences per request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=6.0, help="measured window, seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before the window")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the example model")
    parser.add_argument(
        "--json", type=Path, default=None, help="default bench/results/loop-cpu-<device>.json"
    )
    args = parser.parse_args(argv)
    if args.inputs < 1 or args.concurrency < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--inputs and --concurrency must be >= 1, --duration > 0, --warmup >= 0")
    out = args.json or BENCH_DIR / "results" / f"loop-cpu-{args.device}.json"
    check_model_dir(parser, args.model_dir)
    mdir = model_dir(args.model_dir)
    bodies = workload_bodies(mdir, args.inputs)
    server_args = server_settings(
        args.device, args.dtype, args.inputs, out.parent / "logs-loop-cpu", args.model_dir, mdir
    )
    with started_servers(("kgpu",), server_args, mdir) as servers:
        server = servers["kgpu"]
        replica_url(server.base_url)  # exactly one replica is ready
        gateway = server.process.pid
        replica = replica_pid(gateway)
        url = server.base_url + "/v1/embeddings"
        if args.warmup:
            run_closed_loop(url, bodies, args.concurrency, args.warmup, 0, args.inputs)
        before = {pid: thread_cpu_s(pid) for pid in (gateway, replica)}
        started = time.monotonic()
        load = run_closed_loop(url, bodies, args.concurrency, args.duration, 0, args.inputs)
        wall = time.monotonic() - started
        after = {pid: thread_cpu_s(pid) for pid in (gateway, replica)}

    summary = load.summary()
    requests = summary["requests_ok"]
    if requests == 0 or summary["errors"]:
        console.print(f"[red]the load failed: {summary}[/]")
        return 1
    rows = []
    for name, pid in (("gateway", gateway), ("replica", replica)):
        loop_s, other_s = split_cpu(before[pid], after[pid], pid)
        loop_ms = 1000 * loop_s / requests
        rows.append(
            {
                "process": name,
                "loop_cpu_ms_per_request": round(loop_ms, 4),
                "loop_busy_fraction": round(loop_s / wall, 3),
                "other_threads_cpu_ms_per_request": round(1000 * other_s / requests, 4),
                "loop_ceiling_req_per_s": round(1000 / loop_ms, 1) if loop_ms else None,
                "loop_ceiling_emb_per_s": round(1000 / loop_ms * args.inputs, 1) if loop_ms else None,
            }
        )

    table = Table(
        title=f"event-loop CPU per request: {args.inputs} input(s), concurrency {args.concurrency}, "
        f"{summary['req_per_s']:,.1f} req/s ({summary['emb_per_s']:,.0f} emb/s) over {args.duration:g} s"
    )
    for column in (
        "process",
        "loop CPU ms/req",
        "loop busy",
        "other threads ms/req",
        "loop ceiling req/s",
        "emb/s",
    ):
        table.add_column(column, justify="left" if column == "process" else "right")
    for r in rows:
        table.add_row(
            r["process"],
            f"{r['loop_cpu_ms_per_request']:.3f}",
            f"{100 * r['loop_busy_fraction']:.0f}%",
            f"{r['other_threads_cpu_ms_per_request']:.3f}",
            f"{r['loop_ceiling_req_per_s']:,.0f}",
            f"{r['loop_ceiling_emb_per_s']:,.0f}",
        )
    console.print(table)
    console.print(
        "note: a loop's ceiling is 1 / its CPU per request, the rate at which that one thread would be busy"
        " all the time; the gateway and the replica run in separate processes, so the lower one bounds kgpu"
    )
    write_results(
        out,
        "loop_cpu",
        vars(args) | {"json": out, "model_dir": mdir},
        machine_facts(args.device) | {"cpus": os.cpu_count()},
        load=summary,
        rows=rows,
    )
    console.print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
