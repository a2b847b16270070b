"""What kgpu's gateway costs in front of a server it runs as a `command` runtime, against calling it directly.

`kgpu up` runs the example embedding model in a server that is not kgpu's: infinity-emb (the
`infinity` preset, from its own environment `.venv-infinity`, `make infinity`), or with
`--server naive` (the default where infinity is not installed) the FastAPI + sentence-transformers
server of bench/common/naive_server.py, or with `--server stub` a server that answers at once, started as `spec.runtime.kind: command` with `$(MODEL_PATH)`
and `portFlag`; the same server is then driven through the gateway and at its own address, in the
same run. Concurrency 1 is paired (each sentence to both targets in turn, the order
rotating, a short pause between requests); concurrency 64 alternates direct and gateway windows
(direct, gateway, gateway, direct, ...).
Targets: p50 through the gateway at most 1 ms above direct at concurrency 1, and at least 0.95x the
direct throughput at concurrency 64. The `kgpu up` process's CPU time (all its threads, from /proc)
over the concurrency-1 phase, less what it spends idle, per request through the gateway, is the
gateway's own CPU per request.

    .venv/bin/python -m bench.command_overhead [--server infinity|naive|stub] [--requests 1000] [--duration 8]

The p50 added comes with a 95 % bootstrap interval over the pairs and the median of the paired
differences: on a shared 2-core machine one run's p50s move by tenths of a millisecond.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from bench.common import kgpu_launch
from bench.common.latency_pairs import added_p50, paired
from bench.common.loadgen import run_closed_loop
from bench.common.machine import child_env, machine_facts
from bench.common.model import example_model_dir
from bench.common.results import write_results
from bench.common.servers import ServerProcess, free_port, replica_url
from bench.common.workload import DEFAULT_SEED, workload_bodies
from bench.loop_cpu import thread_cpu_s

BENCH_DIR = Path(__file__).resolve().parent
console = Console(width=None if sys.stdout.isatty() else 132)
P50_BUDGET_MS = 1.0
THROUGHPUT_FLOOR = 0.95
READY_TIMEOUT_S = 300.0
WARMUP_REQUESTS = 20  # per target, before the measured concurrency-1 requests
INFINITY_BIN = BENCH_DIR.parent / ".venv-infinity" / "bin"


# The command runtimes this benchmark can put behind the gateway, by --server.
RUNTIMES = {
    # infinity-emb, as the README's example runs it.
    "infinity": {"preset": "infinity", "device": "cpu"},
    # The FastAPI + sentence-transformers server of bench/common/naive_server.py.
    "naive": {
        "kind": "command",
        "command": [
            sys.executable, "-m", "bench.common.naive_server", "--model-dir", "$(MODEL_PATH)",
            "--host", "$(KGPU_HOST)", "--device", "cpu",
        ],
        "portFlag": "--port",
        "readinessPath": "/openapi.json",  # FastAPI answers it once the model is loaded
        "protocol": "openai",
    },
    # A server that answers at once (bench/common/stub_replica.py): what is left is the gateway's own cost.
    "stub": {
        "kind": "command",
        "command": [sys.executable, "-m", "bench.common.stub_replica", "--host", "$(KGPU_HOST)"],
        "portFlag": "--port",
        "readinessPath": "/openapi.json",
        "protocol": "openai",
    },
}  # fmt: skip


def command_service(model_dir: Path, server: str, openmp_default: bool = False) -> dict:
    """The example model in a server other than kgpu's, as a command runtime.

    `openmp_default`: the server's OpenMP threads wait as the library does by default (spinning a few
    milliseconds) instead of kgpu's CPU default OMP_WAIT_POLICY=PASSIVE (kgpu.serving.replica_spec):
    the variable is given empty, which kgpu passes on as set and libgomp takes as not given.
    """
    runtime = dict(RUNTIMES[server])
    if openmp_default:
        runtime["env"] = {**runtime.get("env", {}), "OMP_WAIT_POLICY": ""}
    return {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "minilm", "namespace": "default"},  # the model the workload names
        "spec": {"model": {"uri": str(model_dir)}, "replicas": 1, "runtime": runtime},
    }


def wait_ready(base: str, deadline_s: float, server: ServerProcess) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"kgpu up exited; see {server.log_path}")
        try:
            items = httpx.get(f"{base}/apis/kgpu.dev/v1alpha1/replicas", timeout=5).json()["items"]
            if any(r["phase"] == "Ready" for r in items):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the command runtime was not ready after {deadline_s:.0f} s; see {server.log_path}")


def process_cpu_s(pid: int) -> float:
    return sum(thread_cpu_s(pid).values())


def gateway_cpu_ms_per_request(pid: int, run_paired: Callable[[], dict], idle_s: float = 2.0) -> dict:
    """Run the paired phase; the gateway process's CPU ms per request through it, less its idle rate."""
    before = process_cpu_s(pid)
    time.sleep(idle_s)
    idle_rate = (process_cpu_s(pid) - before) / idle_s  # CPU seconds per second with no request
    before, started = process_cpu_s(pid), time.monotonic()
    latencies = run_paired()
    spent, wall = process_cpu_s(pid) - before, time.monotonic() - started
    requests = len(latencies["gateway"]) + WARMUP_REQUESTS
    return {
        "latencies": latencies,
        "cpu_ms_per_request": round(1000 * (spent - idle_rate * wall) / requests, 4),
        "idle_cpu_fraction": round(idle_rate, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=1000, help="paired requests per target at concurrency 1"
    )
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput window")
    parser.add_argument("--rounds", type=int, default=4, help="direct/gateway window pairs at --concurrency")
    parser.add_argument(
        "--server",
        choices=sorted(RUNTIMES),
        default="infinity" if (INFINITY_BIN / "infinity_emb").exists() else "naive",
        help="the command runtime's server (infinity where .venv-infinity exists)",
    )
    parser.add_argument(
        "--openmp-default",
        action="store_true",
        help="the server's OpenMP threads spin as libgomp does by default (not kgpu's OMP_WAIT_POLICY=PASSIVE)",
    )
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "command-overhead-cpu.json")
    args = parser.parse_args(argv)
    model = example_model_dir()
    service = command_service(model, args.server, args.openmp_default)
    env = child_env()
    env["PATH"] = os.pathsep.join([env.get("PATH", os.defpath), str(INFINITY_BIN)])
    bodies = workload_bodies(str(model), 1, DEFAULT_SEED)
    with tempfile.TemporaryDirectory(prefix="kgpu-bench-") as tmp:
        work = Path(tmp)
        services = work / "minilm.yaml"
        services.write_text(yaml.safe_dump(service, sort_keys=False))
        port = free_port()
        command = [*kgpu_launch.kgpu_executable(), "up", "-f", str(services), "--port", str(port)]
        command += ["--state-dir", str(work / "state")]
        server = ServerProcess("kgpu", command, port, args.json.parent / "logs" / "command-overhead-kgpu.log")
        server.start(env=env)
        try:
            wait_ready(server.base_url, READY_TIMEOUT_S, server)
            direct = replica_url(server.base_url) + "/v1/embeddings"
            urls = {"direct": direct, "gateway": server.base_url + "/v1/embeddings"}
            console.print(
                f"{args.server} as a command runtime at {direct}; {args.requests} paired requests at concurrency 1"
            )
            cpu_ms = gateway_cpu_ms_per_request(
                server.process.pid,
                lambda: asyncio.run(paired(urls, bodies, args.requests, WARMUP_REQUESTS, args.gap_ms / 1000)),
            )
            latencies = cpu_ms.pop("latencies")
            throughput: dict[str, list[float]] = {"direct": [], "gateway": []}
            for round_ in range(args.rounds):
                # direct, gateway, gateway, direct, ...: a drift in the machine's load weighs on both alike.
                for name in list(urls)[:: 1 if round_ % 2 == 0 else -1]:
                    url = urls[name]
                    result = run_closed_loop(url, bodies, args.concurrency, args.duration, 1.0)
                    summary = result.summary()
                    if summary["errors"]:
                        raise RuntimeError(f"{name}: {summary['errors']} errors: {summary['error_kinds']}")
                    throughput[name].append(summary["req_per_s"])
        finally:
            server.stop()
    p50 = {name: statistics.median(values) for name, values in latencies.items()}
    # --rounds 0: concurrency 1 only (comparing settings of the server over many short runs).
    rps = {name: statistics.median(values) if values else math.nan for name, values in throughput.items()}
    added = added_p50(latencies["direct"], latencies["gateway"])
    p50_added = added["p50_added_ms"]
    ratio = rps["gateway"] / rps["direct"] if args.rounds else math.nan
    table = Table(title=f"gateway in front of {args.server} as a command runtime (CPU, same run)")
    for column in ("target", "p50 ms (c=1)", f"req/s (c={args.concurrency})"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for name in urls:
        table.add_row(name, f"{p50[name]:.2f}", f"{rps[name]:.1f}")
    console.print(table)
    p50_ok, ratio_ok = p50_added <= P50_BUDGET_MS, ratio >= THROUGHPUT_FLOOR
    low, high = added["ci95_ms"]
    console.print(
        f"p50 added by the gateway: {p50_added:.2f} ms (95% interval {low:.2f} to {high:.2f}; median of the "
        f"paired differences {added['median_paired_difference_ms']:.2f}) (target <= {P50_BUDGET_MS} ms): {p50_ok}"
    )
    console.print(f"throughput ratio: {ratio:.3f} (target >= {THROUGHPUT_FLOOR}): {ratio_ok}")
    console.print(
        f"kgpu up's CPU per request through the gateway (c=1): {cpu_ms['cpu_ms_per_request']:.3f} ms"
    )
    write_results(
        args.json,
        "command_overhead",
        vars(args),
        machine_facts("cpu"),
        p50_ms=p50,
        p50_added_ms=p50_added,
        p50_added_ci95_ms=added["ci95_ms"],
        median_paired_difference_ms=added["median_paired_difference_ms"],
        req_per_s=rps if args.rounds else None,
        req_per_s_rounds=throughput,
        throughput_ratio=round(ratio, 4) if args.rounds else None,
        gateway_process_cpu=cpu_ms,
        targets={"p50_added_ms_max": P50_BUDGET_MS, "throughput_ratio_min": THROUGHPUT_FLOOR},
        met={"p50": p50_ok, "throughput": ratio_ok if args.rounds else None},
        # Other work on the machine moves these numbers more than the gateway does: say how much there was.
        load_average_1m_at_end=round(os.getloadavg()[0], 2),
    )
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
