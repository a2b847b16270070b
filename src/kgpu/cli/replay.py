"""`kgpu sim replay`: replay a request trace against a replica autoscaler on a virtual clock.

With ``--fleet FILE`` the service runs on several simulated clusters (`kgpu.sim.fleet`): the
output adds GPU-hours and cost per cluster, and the replicas of each cluster over time.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kgpu.cli.plotting import pyplot
from kgpu.sim.azure_trace import DEFAULT_TRACE, TraceError, load_azure_trace
from kgpu.sim.fleet import FleetError, load_fleet, outage_option
from kgpu.sim.fleet_replay import FleetReplayResult, replay_fleet
from kgpu.sim.replay import POLICIES, ReplayResult, ServiceModel, find_static
from kgpu.sim.replay import replay as run_replay
from kgpu.sim.trace_versions import ALL_VERSIONS, trace_version

console = Console()
err = Console(stderr=True)

COLUMNS = (
    ("policy", "policy", "{}"),
    ("SLO met", "slo_attainment_pct", "{:.2f}%"),
    ("failed", "failed_requests", "{}"),
    ("GPU-hours", "gpu_hours", "{:.2f}"),
    ("node-hours", "node_hours", "{:.2f}"),
    ("p50 s", "p50_latency_s", "{:.2f}"),
    ("p99 s", "p99_latency_s", "{:.2f}"),
    ("scale events", "scale_events", "{}"),
    ("max replicas", "max_replicas", "{}"),
)


QUEUES = ("deadline", "fifo")


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    """``--queue`` and ``--container-concurrency`` for the benchmark scripts that replay the trace."""
    parser.add_argument("--queue", choices=QUEUES, default="deadline", help="the gateway queue's order")
    parser.add_argument(
        "--container-concurrency",
        type=int,
        default=0,
        help="requests the gateway lets one replica hold (spec.containerConcurrency); 0: the replica's own limit",
    )


def gateway_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ServiceModel:
    """The service model behind the gateway those arguments describe (a bad value exits with its name)."""
    if args.container_concurrency < 0:
        parser.error(f"--container-concurrency must be >= 0, got {args.container_concurrency}")
    return ServiceModel(queue=args.queue, container_concurrency=args.container_concurrency)


def run_policy(
    trace: Sequence, policy: str, timeline_every_s: float = 10.0, model: ServiceModel = ServiceModel()
) -> ReplayResult:
    """One policy on a loaded trace; ``static`` searches its replica count first."""
    if policy == "static":
        return find_static(trace, model, timeline_every_s=timeline_every_s)
    return run_replay(trace, policy, model, timeline_every_s=timeline_every_s)


def numbers_table(title: str, headers: Sequence[str]) -> Table:
    """A table of one named row per line: its first column (the name) left-aligned, the numbers right."""
    table = Table(title=title)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    return table


def results_table(results: Sequence[ReplayResult], title: str) -> Table:
    table = numbers_table(title, [header for header, _, _ in COLUMNS])
    for result in results:
        data = result.to_dict()
        row = [fmt.format(data[key]) for _, key, fmt in COLUMNS]
        if result.replicas is not None:
            row[0] = f"{result.policy} x{result.replicas}"
        table.add_row(*row)
    return table


def plot_timelines(results: Sequence[ReplayResult], path: Path) -> None:
    """Replicas and gateway queue over time, one panel each, one line per policy (needs matplotlib)."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for result in results:
        minutes = [f["t"] / 60 for f in result.timeline]
        top.step(
            minutes, [f["replicas"] for f in result.timeline], where="post", label=result.policy, linewidth=1
        )
        bottom.step(
            minutes, [f["queue"] for f in result.timeline], where="post", label=result.policy, linewidth=1
        )
    top.set_ylabel("replicas (GPUs)")
    bottom.set_ylabel("gateway queue (requests)")
    bottom.set_xlabel("trace time (minutes)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(ncol=len(results), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fleet_table(result: FleetReplayResult, title: str) -> Table:
    """GPU-hours and cost per cluster, and the fleet's total."""
    table = numbers_table(
        title,
        (
            "cluster",
            "requests",
            "SLO met",
            "GPU-hours",
            "cost $",
            "node-hours",
            "node cost $",
            "max replicas",
        ),
    )
    for c in result.clusters:
        table.add_row(
            c.name,
            str(c.requests),
            f"{c.slo_attainment_pct:.2f}%",
            f"{c.gpu_hours:.2f}",
            f"{c.cost:.2f}",
            f"{c.node_hours:.2f}",
            f"{c.node_cost:.2f}",
            str(c.max_replicas),
        )
    r = result.replay
    table.add_row(
        "total",
        str(r.requests),
        f"{r.slo_attainment_pct:.2f}%",
        f"{r.gpu_hours:.2f}",
        f"{result.cost:.2f}",
        f"{r.node_hours:.2f}",
        f"{result.node_cost:.2f}",
        str(r.max_replicas),
        style="bold",
    )
    return table


def plot_fleet(result: FleetReplayResult, path: Path) -> None:
    """Replicas of each cluster over time, outages shaded (needs matplotlib)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    timeline = result.replay.timeline
    minutes = [f["t"] / 60 for f in timeline]
    for cluster in result.clusters:
        counts = [f.get(f"replicas.{cluster.name}", 0) for f in timeline]
        ax.step(minutes, counts, where="post", label=cluster.name, linewidth=1)
    for outage in result.outages:
        ax.axvspan(
            outage["start_s"] / 60,
            outage["end_s"] / 60,
            color="red",
            alpha=0.12,
            label=f"{outage['cluster']} out",
        )
    ax.set_ylabel("replicas (GPUs)")
    ax.set_xlabel("trace time (minutes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _replay_fleet(
    fleet_path: Path,
    outages: list[dict] | None,
    requests: Sequence,
    policy: str,
    model: ServiceModel,
    plot: Path | None,
):
    if policy == "static":
        err.print(
            "[red]error:[/red] --policy: a fleet replays an autoscaled policy (kgpu, kpa, hpa), not static"
        )
        raise typer.Exit(2)
    result = replay_fleet(requests, load_fleet(fleet_path, outages), policy, model)
    if plot is not None:
        plot_fleet(result, plot)
    return result


def replay(
    trace: Path = typer.Option(DEFAULT_TRACE, "--trace", help="AzureLLMInferenceTrace_code.csv"),
    policy: str = typer.Option("kgpu", "--policy", help=f"one of: {', '.join(POLICIES)}"),
    version: str = typer.Option(
        "full",
        "--trace-version",
        help=f"the trace's version (kgpu.sim.trace_versions): {', '.join(ALL_VERSIONS)}",
    ),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
    plot: Path | None = typer.Option(None, "--plot", help="write replicas and queue over time to this PNG"),
    queue: str = typer.Option(
        "deadline", "--queue", help="gateway queue: deadline (kgpu's, earliest deadline first) or fifo"
    ),
    container_concurrency: int = typer.Option(
        0,
        "--container-concurrency",
        min=0,
        help="requests the gateway lets one replica hold (spec.containerConcurrency); 0: the replica's 16",
    ),
    fleet: Path | None = typer.Option(
        None,
        "--fleet",
        help="replay on the clusters, placement and outages of this fleet YAML (examples/fleets/onprem-and-cloud.yaml)",
    ),
    outage: list[str] | None = typer.Option(
        None,
        "--outage",
        help="with --fleet: CLUSTER@START+LENGTH in trace time, e.g. onprem@28m+10m; replaces the file's outages; repeatable",
    ),
) -> None:
    """Replay the Azure LLM trace at its real timing under one autoscaling policy (virtual clock)."""
    if policy not in POLICIES:
        err.print(f"[red]error:[/red] --policy: unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        raise typer.Exit(2)
    if version not in ALL_VERSIONS:
        err.print(
            f"[red]error:[/red] --trace-version: unknown trace version {version!r}; known: {', '.join(ALL_VERSIONS)}"
        )
        raise typer.Exit(2)
    if queue not in QUEUES:
        err.print(f"[red]error:[/red] --queue: unknown queue {queue!r}; known: {', '.join(QUEUES)}")
        raise typer.Exit(2)
    outages = None
    if outage:
        if fleet is None:
            err.print("[red]error:[/red] --outage: needs --fleet (the clusters it names)")
            raise typer.Exit(2)
        try:
            outages = [outage_option(text) for text in outage]
        except FleetError as exc:
            err.print(f"[red]error:[/red] --outage: {escape(str(exc))}")
            raise typer.Exit(2) from None
    try:
        requests = trace_version(load_azure_trace(trace), version)
        model = ServiceModel(queue=queue, container_concurrency=container_concurrency)
        if fleet is not None:
            fleet_result = _replay_fleet(fleet, outages, requests, policy, model, plot)
            result = fleet_result.replay
        else:
            fleet_result = None
            result = run_policy(requests, policy, model=model)
            if plot is not None:
                plot_timelines([result], plot)
    except (TraceError, FleetError, ValueError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if json_out:
        print(json.dumps((fleet_result or result).to_dict()))
        return
    title = f"replay ({version}): {len(requests)} requests over {requests[-1].arrival_s:.0f} s"
    console.print(results_table([result], title))
    if fleet_result is not None:
        console.print(fleet_table(fleet_result, f"fleet ({fleet_result.placement})"))
        console.print(
            f"outages: {len(fleet_result.outages)}; requests retried in another cluster: "
            f"{fleet_result.retried_requests}; streams cut: {fleet_result.cut_streams}"
        )
    if plot is not None:
        console.print(f"plot written to {plot}")
