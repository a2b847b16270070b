"""Where a fixed replica count misses the SLO: misses per 30 s of arrival time, for 3..9 replicas.

Shows which bursts set the capacity any policy must have ready when they start (a replica takes
longer to start than a request's SLO slack, so only capacity already there can serve a burst).
Prints a table and writes bench/results/replay_bursts.json.

    .venv/bin/python -m bench.replay_bursts [--trace FILE] [--queue deadline|fifo] [--container-concurrency N]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kgpu.cli.replay import add_gateway_arguments, gateway_model
from kgpu.sim.azure_trace import DEFAULT_TRACE, TraceError, load_azure_trace
from kgpu.sim.replay import replay

RESULTS = Path(__file__).parent / "results"
BUCKET_S = 30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--replicas", type=int, nargs="+", default=list(range(3, 10)))
    parser.add_argument("--out", type=Path, default=RESULTS / "replay_bursts.json")
    add_gateway_arguments(parser)
    args = parser.parse_args()
    model = gateway_model(parser, args)
    console = Console()
    try:
        trace = load_azure_trace(args.trace)
    except TraceError as exc:
        console.print(f"error: {exc}", markup=False)
        return 1
    misses: dict[int, Counter[int]] = {}
    totals: dict[int, int] = {}
    for count in args.replicas:
        result = replay(trace, "static", model, static_replicas=count)
        misses[count] = Counter(int(t // BUCKET_S) * BUCKET_S for t in result.missed_arrivals_s)
        totals[count] = len(result.missed_arrivals_s)
    buckets = sorted({b for per in misses.values() for b in per})
    table = Table(
        title=f"SLO misses by arrival time; columns: static replica count (99% allows {len(trace) // 100})"
    )
    table.add_column("arrivals from", no_wrap=True)
    for count in args.replicas:
        table.add_column(str(count), justify="right")
    for bucket in buckets:
        table.add_row(f"{bucket} s", *(str(misses[c].get(bucket, 0)) for c in args.replicas))
    table.add_row("total", *(str(totals[c]) for c in args.replicas))
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "trace": str(args.trace),
        "bucket_s": BUCKET_S,
        "requests": len(trace),
        "missed_total": totals,
        "missed_by_bucket": {c: dict(sorted(misses[c].items())) for c in args.replicas},
    }
    args.out.write_text(json.dumps(payload, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
