#!/usr/bin/env python3
"""Serving benchmark: kgpu against its own engine ceiling, a naive server and LitServe, in one run.

Systems (measured one at a time, each server in its own process on a free loopback port):
  engine    kgpu's EmbeddingEngine in-process, tokenization included, per batch size (the ceiling)
  kgpu      `kgpu up` serving examples/minilm.yaml, driven through the gateway's /v1/embeddings
  naive     FastAPI + sentence-transformers, one encode() per request in FastAPI's threadpool
  litserve  LitServe with dynamic batching (max_batch_size 64, batch_timeout 5 ms), one worker, ZeroMQ queue

Load: closed-loop clients (asyncio + aiohttp, kept-alive connections) at each concurrency level, a fixed
measurement window after a warm-up, single-sentence requests of 5-60 words from a seeded generator.
Prints a table and the targets with PASS/MISS computed from the measured numbers; writes JSON.

Examples:
  .venv/bin/python -m bench.serving                                  # all systems, CPU defaults
  .venv/bin/python -m bench.serving --systems naive,litserve --duration 3 --concurrency 1,8
  python3 -m bench.serving --device cuda --dtype bfloat16 --duration 6
  python3 -m bench.serving --device cuda --dtype bfloat16 --systems kgpu --batch-inputs 32 --concurrency 8,32
  python3 -m bench.serving --report bench/results/serving-cuda.json      # re-print a saved (partial) run
  .venv/bin/python -m bench.serving --model-dir /tmp/minilm-l0   # a cheap model: the servers' own overhead
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import targets
from bench.common.loadgen import run_closed_loop
from bench.common.machine import child_env, machine_facts
from bench.common.model import check_model_dir, model_dir
from bench.common.servers import READY_TIMEOUT_S, ServerStartError, keep_replica_logs, server_for
from bench.common.workload import (
    DEFAULT_SEED,
    SENTENCE_POOL,
    load_vocabulary,
    make_sentences,
    probe_body,
    request_bodies,
    word_counts,
)

BENCH_DIR = Path(__file__).resolve().parent
ALL_SYSTEMS = ("engine", "kgpu", "naive", "litserve")

# Logs are read in files and CI output: use a width that fits the table instead of 80 columns.
console = Console(width=None if sys.stdout.isatty() else 132)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="kgpu serving benchmark (engine ceiling, kgpu, naive FastAPI, LitServe)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--systems", default=",".join(ALL_SYSTEMS), help="comma list of " + ",".join(ALL_SYSTEMS)
    )
    parser.add_argument("--concurrency", default="1,8,64,256", help="comma list of client counts")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds per point excluded from the numbers"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto")
    parser.add_argument(
        "--batch-inputs", type=int, default=1, help="sentences per request (embeddings/s = N x req/s)"
    )
    parser.add_argument("--engine-batch-sizes", default="1,8,32,64,128")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="serve this model directory on every system (default: the example's; see bench/common/model.py)",
    )
    parser.add_argument(
        "--engine-workers",
        type=int,
        default=None,
        help="kgpu's batches computed at once (spec.runtime.engineWorkers; default: the replica's own)",
    )
    parser.add_argument(
        "--client-procs",
        default="auto",
        help="load-generator processes; auto = 1 on machines with <= 4 cores, else 4",
    )
    parser.add_argument("--json", type=Path, default=None, help="default bench/results/serving-<device>.json")
    parser.add_argument("--log-dir", type=Path, default=None, help="server logs; default <json dir>/logs")
    args = parser.parse_args(argv)

    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in ALL_SYSTEMS]
    if unknown:
        parser.error(f"--systems: unknown {unknown}; choose from {', '.join(ALL_SYSTEMS)}")
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
        args.engine_batch_sizes = [int(b) for b in args.engine_batch_sizes.split(",") if b.strip()]
    except ValueError as exc:
        parser.error(f"--concurrency/--engine-batch-sizes must be comma lists of integers ({exc})")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency: every level must be >= 1")
    if args.batch_inputs < 1 or args.batch_inputs > 2048:
        parser.error("--batch-inputs must be between 1 and 2048")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be > 0 and --warmup >= 0")
    if args.engine_workers is not None and not 1 <= args.engine_workers <= 64:
        parser.error("--engine-workers must be between 1 and 64")
    check_model_dir(parser, args.model_dir)
    # kgpu serves the example's own model package unless told otherwise (server_for).
    args.model_uri = None if args.model_dir is None else model_dir(args.model_dir)
    cores = os.cpu_count() or 1
    if args.client_procs == "auto":
        args.client_procs = 1 if cores <= 4 else 4
    else:
        try:
            args.client_procs = max(1, int(args.client_procs))
        except ValueError:
            parser.error("--client-procs must be 'auto' or an integer")
    if args.json is None:
        suffix = "" if args.batch_inputs == 1 else f"-inputs{args.batch_inputs}"
        args.json = BENCH_DIR / "results" / f"serving-{args.device}{suffix}.json"
    if args.log_dir is None:
        args.log_dir = args.json.parent / "logs"
    return args


# ---------------------------------------------------------------- systems


def run_engine(args: argparse.Namespace, mdir: str) -> dict:
    """The in-process engine in a child process (torch stays out of the load generator's process)."""
    args.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.log_dir / f"engine-{args.device}.log"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "engine.json"
        command = [
            sys.executable,
            "-m",
            "bench.engine_ceiling",
            "--model-dir",
            mdir,
            "--json-out",
            str(out),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--batch-sizes",
            ",".join(map(str, args.engine_batch_sizes)),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--seed",
            str(args.seed),
        ]
        # Every batch size runs with one worker and with the replica's workers (engine_ceiling.py).
        budget = 2 * len(args.engine_batch_sizes) * (args.duration + args.warmup + 60) + READY_TIMEOUT_S
        with log_path.open("w") as log:
            try:
                done = subprocess.run(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=budget,
                    env=child_env(),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return {"ok": False, "error": f"engine run exceeded {budget:.0f} s", "log": str(log_path)}
        if done.returncode != 0 or not out.exists():
            from bench.common.servers import log_tail

            return {
                "ok": False,
                "error": f"engine exited with {done.returncode}:\n{log_tail(log_path)}",
                "log": str(log_path),
            }
        report = json.loads(out.read_text())
    report.update(ok=True, log=str(log_path))
    return report


def run_server(
    system: str, args: argparse.Namespace, mdir: str, bodies: list[bytes], record: dict, save
) -> None:
    """Measure one server into ``record`` (filled in place; ``save()`` after every point)."""
    with tempfile.TemporaryDirectory(prefix=f"kgpu-bench-{system}-") as tmp:
        server = server_for(system, args, mdir, Path(tmp))
        record.update(ok=False, log=str(server.log_path), command=server.command, points=[])
        console.print(f"[bold]{system}[/]: starting on port {server.port} (log {server.log_path})")
        try:
            server.start(env=child_env())
            probe = server.wait_ready(
                "/v1/embeddings", probe_body(args.batch_inputs), args.batch_inputs, READY_TIMEOUT_S
            )
            record["ready_s"] = round(time.monotonic() - server.started_at, 1)
            record["probe_embedding"] = probe["data"][0]["embedding"]
            record["dim"] = len(record["probe_embedding"])
            console.print(f"  ready in {record['ready_s']} s (dim {record['dim']})")
            for concurrency in args.concurrency:
                result = run_closed_loop(
                    server.base_url + "/v1/embeddings",
                    bodies,
                    concurrency,
                    args.duration,
                    args.warmup,
                    inputs_per_request=args.batch_inputs,
                    processes=args.client_procs,
                )
                row = result.summary()
                record["points"].append(row)
                save()
                console.print(
                    f"  c={concurrency:<4} {row['req_per_s']:>9.1f} req/s {row['emb_per_s']:>10.1f} emb/s "
                    f"p50 {_fmt(row['p50_ms'])} ms p99 {_fmt(row['p99_ms'])} ms errors {row['errors']}"
                )
                if not server.alive():
                    raise ServerStartError(f"{system} died during the run (see {server.log_path})")
            record["ok"] = True
        except ServerStartError as exc:
            record["error"] = str(exc)
            console.print(f"  [red]{system} failed:[/] {exc}")
        finally:
            server.stop()
            if system == "kgpu":
                record["replica_logs"] = keep_replica_logs(Path(tmp), server.log_path)


# ---------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def cosine(a: list[float], b: list[float]) -> float | None:
    if len(a) != len(b) or not a:
        return None
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return round(dot / (na * nb), 5) if na and nb else None


def print_report(report: dict) -> None:
    systems = report["systems"]
    table = Table(
        title=f"serving benchmark ({report['config']['device']}, dtype {report['config']['dtype']})"
    )
    for column in ("system", "concurrency", "inputs/req", "req/s", "emb/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="left" if column == "system" else "right")
    engine = systems.get("engine")
    if engine and engine.get("ok"):
        best = targets.engine_ceiling(systems)
        for row in engine["batch_sizes"]:
            mark = " (best)" if row["seq_per_s"] == best else ""
            workers = row.get("workers", 1)  # results saved before engine workers have none
            layout = f" x{workers}" if workers > 1 else ""
            table.add_row(
                f"engine b={row['batch_size']}{layout}{mark}",
                "-",
                str(row["batch_size"]),
                "-",
                _fmt(row["seq_per_s"], 1),
                _fmt(row["p50_ms"]),
                _fmt(row["p99_ms"]),
                "-",
            )
    for name in ("kgpu", "naive", "litserve"):
        record = systems.get(name)
        if not record:
            continue
        for row in record["points"]:
            table.add_row(
                name,
                str(row["concurrency"]),
                str(report["config"]["batch_inputs"]),
                _fmt(row["req_per_s"], 1),
                _fmt(row["emb_per_s"], 1),
                _fmt(row["p50_ms"]),
                _fmt(row["p99_ms"]),
                str(row["errors"]),
            )
        if not record.get("ok"):
            table.add_row(name, "-", "-", "-", "-", "-", "-", "[red]failed[/]")
    if engine and not engine.get("ok"):
        table.add_row("engine", "-", "-", "-", "-", "-", "-", "[red]failed[/]")
    console.print(table)
    for note in report["notes"] + report.get("findings", []):
        console.print(f"[dim]note:[/] {note}")

    checks = Table(title="targets (from the numbers above)")
    for column in ("target", "goal", "measured", "result", "detail"):
        checks.add_column(column)
    colors = {"PASS": "green", "MISS": "red", "n/a": "yellow"}
    for t in report["targets"]:
        checks.add_row(
            t["name"], t["goal"], _fmt(t["value"], 3), f"[{colors[t['status']]}]{t['status']}[/]", t["detail"]
        )
    console.print(checks)


def agreement_notes(systems: dict) -> list[str]:
    """Cosine between each system's probe embedding and naive's: all must compute the same model."""
    ref = (systems.get("naive") or {}).get("probe_embedding")
    notes = []
    for name in ("kgpu", "litserve"):
        vec = (systems.get(name) or {}).get("probe_embedding")
        if ref and vec:
            notes.append(f"probe embedding cosine {name} vs naive: {cosine(ref, vec)}")
    return notes


def _exit_on_sigterm() -> None:
    # `timeout` and CI send SIGTERM: unwinding through the `finally` blocks stops the server under test
    # instead of leaving it holding the port and the GPU.
    def handler(signum: int, _frame) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--report"]:
        if len(argv) != 2:
            raise SystemExit("usage: serving.py --report RESULTS.json")
        return report_only(Path(argv[1]))
    _exit_on_sigterm()
    args = parse_args(argv)
    mdir = model_dir(args.model_dir)
    vocabulary = load_vocabulary(mdir)
    sentences = make_sentences(SENTENCE_POOL, args.seed, vocabulary)
    bodies = request_bodies(sentences, args.batch_inputs)
    cores = os.cpu_count() or 1
    notes = [
        f"load generator: one asyncio loop per process x {args.client_procs} process(es), aiohttp, kept-alive "
        f"connections; it shares this machine's {cores} CPU cores with the server under test"
        + (" and competes with it for CPU, which lowers every HTTP system's numbers" if cores <= 4 else ""),
        f"window {args.duration:g} s per point after {args.warmup:g} s warm-up; closed loop",
    ]
    report: dict = {
        "benchmark": "serving",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "machine": {
            "hostname": platform.node(),
            "cpu_count": cores,
            "platform": platform.platform(),
            **machine_facts(args.device),
        },
        "config": {
            "systems": args.systems,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "device": args.device,
            "dtype": args.dtype,
            "batch_inputs": args.batch_inputs,
            "engine_batch_sizes": args.engine_batch_sizes,
            "seed": args.seed,
            "client_processes": args.client_procs,
            "model_dir": mdir,
            "model_dir_given": args.model_dir is not None,
            "engine_workers": args.engine_workers,
            "litserve": {
                "max_batch_size": 64,
                "batch_timeout_s": 0.005,
                "workers_per_device": 1,
                "fast_queue": True,
            },
        },
        "workload": {"vocabulary_words": len(vocabulary), **word_counts(sentences)},
        "systems": {},
        "targets": [],
        "notes": notes,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    console.print(
        f"serving benchmark: systems {','.join(args.systems)}, concurrency {args.concurrency}, "
        f"{args.batch_inputs} input(s)/request, device {args.device}, dtype {args.dtype}"
    )

    def save() -> None:
        _write(report, args.json)

    try:
        for system in args.systems:
            record = report["systems"].setdefault(system, {"ok": False})
            if system == "engine":
                console.print("[bold]engine[/]: in-process ceiling per batch size")
                record.update(run_engine(args, mdir))
                if not record["ok"]:
                    console.print(f"  [red]engine failed:[/] {record['error']}")
            else:
                run_server(system, args, mdir, bodies, record, save)
            save()  # after every system too, so a run cut short still leaves its numbers
    finally:
        for record in report["systems"].values():
            if not record.get("ok"):
                record.setdefault("error", "interrupted before it finished")
        finish(report)
        save()
    print_report(report)
    console.print(f"results: {args.json}")
    failed = [name for name, record in report["systems"].items() if not record.get("ok")]
    return 1 if failed else 0


def finish(report: dict) -> None:
    """Derived facts (agreement between systems, targets) from whatever was measured; safe to repeat."""
    findings = []
    if (report["systems"].get("engine") or {}).get("ok"):
        findings.append(
            "engine rows: kgpu's EmbeddingEngine in-process (tokenize + embed), no HTTP; emb/s = sequences/s, "
            "latency = one whole batch; xN = N batches computed at once, as a replica's engine workers do"
        )
    findings += agreement_notes(report["systems"])
    for name, record in report["systems"].items():
        for row in record.get("points", []):
            # Fewer completions than a few rounds of every client means the window never saw steady state.
            if row["requests_ok"] < 3 * row["concurrency"]:
                findings.append(
                    f"{name} at concurrency {row['concurrency']}: only {row['requests_ok']} requests completed "
                    "in the window, too few for steady state; use a longer --duration/--warmup"
                )
    report["findings"] = findings
    config = report["config"]
    report["targets"] = [
        t.to_dict() for t in targets.evaluate(report["systems"], config["device"], config["batch_inputs"])
    ]
    if config.get("model_dir_given"):  # the targets are set for the example model
        for target in report["targets"]:
            target["status"] = "n/a"
            target["detail"] = f"a target for the example model; this run served {config['model_dir']}"


def report_only(path: Path) -> int:
    """Re-print the table and targets of a saved (possibly partial) result file."""
    report = json.loads(path.read_text())
    finish(report)
    print_report(report)
    return 0


def _write(report: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
