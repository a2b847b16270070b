"""`kgpu sim`: run kgpu's scheduler against traces, no cluster needed."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kgpu.cli.plotting import pyplot
from kgpu.cli.replay import replay
from kgpu.scheduling.policies import POLICIES
from kgpu.sim.packing import run_packing
from kgpu.sim.traces import DEFAULT_NODES, DEFAULT_PODS, TraceError, load_nodes, load_pods
from kgpu.sim.variants import BUILD_SEED, build_variants, mix, parse_name, variant_names, write_pods

sim_app = typer.Typer(help="Simulate placement on virtual nodes from traces.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@sim_app.callback()
def sim() -> None:
    """Simulate placement on virtual nodes from traces."""


def plot_allocation(results: list[dict], path: Path) -> None:
    """Allocation against arrived load, one line per policy (needs matplotlib: the `bench` extra)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for result in results:
        keys = sorted(int(k) for k in result["allocation_pct_at"])
        ax.plot(keys, [result["allocation_pct_at"][str(k)] for k in keys], label=result["policy"])
    ax.plot([0, 130], [0, 130], color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("arrived GPU request (% of capacity)")
    ax.set_ylabel("allocated GPU (% of capacity)")
    ax.set_xlim(50, 130)
    ax.set_ylim(50, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@sim_app.command()
def pack(
    trace: Path = typer.Option(DEFAULT_PODS, "--trace", help="openb pod list CSV"),
    nodes: Path = typer.Option(DEFAULT_NODES, "--nodes", help="openb node list CSV"),
    policy: str = typer.Option("kgpu", "--policy", help=f"one of: {', '.join(POLICIES)}; or 'all'"),
    seed: int = typer.Option(42, "--seed", help="seed for workload tuning, order and ties"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (a list with --policy all)"),
    plot: Path | None = typer.Option(None, "--plot", help="write allocation vs arrived load to this PNG"),
) -> None:
    """The FGD packing benchmark: inflate the trace to 130% of GPU capacity, shuffle, place each pod once."""
    names = list(POLICIES) if policy == "all" else [policy]
    for name in names:
        if name not in POLICIES:
            err.print(
                f"[red]error:[/red] --policy: unknown policy {name!r}; known: {', '.join(POLICIES)}, all"
            )
            raise typer.Exit(2)
    try:
        node_specs = load_nodes(nodes)
        pods = load_pods(trace)
        results = [run_packing(node_specs, pods, name, seed) for name in names]
        if plot is not None:
            plot_allocation(results, plot)
    except (TraceError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(results[0] if len(results) == 1 else results))
        return
    table = Table(
        title=f"packing: {len(node_specs)} nodes, {results[0]['capacity_gpus']:.0f} GPUs, seed {seed}"
    )
    table.add_column("policy")
    for point in (50, 80, 90, 100, 130):
        table.add_column(f"alloc @{point}%", justify="right")
    table.add_column("unallocated GPUs @100%", justify="right")
    table.add_column("frag @80/90%", justify="right")
    table.add_column("seconds", justify="right")
    for r in results:
        a, f = r["allocation_pct_at"], r["fragmentation_pct_at"]
        table.add_row(
            r["policy"],
            *(f"{a[str(p)]:.2f}%" for p in (50, 80, 90, 100, 130)),
            f"{r['unallocated_gpus_at_100']:.0f}",
            f"{f['80']:.1f}% / {f['90']:.1f}%",
            f"{r['seconds']:.1f}",
        )
    console.print(table)
    if plot is not None:
        console.print(f"plot written to {plot}")


sim_app.command("replay")(replay)


@sim_app.command()
def variants(
    trace: Path = typer.Option(DEFAULT_PODS, "--trace", help="openb pod list CSV to build from"),
    nodes: Path = typer.Option(DEFAULT_NODES, "--nodes", help="openb node list CSV (GPU models to pin to)"),
    names: str = typer.Option("all", "--names", help="comma-separated variant names, or 'all'"),
    out: Path | None = typer.Option(
        None, "--out", help="write each variant as <out>/openb_pod_list_<name>.csv"
    ),
    seed: int = typer.Option(BUILD_SEED, "--seed", help="seed of the resampling"),
) -> None:
    """Workload variants of the trace, one dimension at a time (CPU-only, sharing, GPU-model pins, multi-GPU)."""
    chosen = variant_names() if names == "all" else [n for n in names.split(",") if n]
    try:
        for name in chosen:
            parse_name(name)
        node_specs, pods = load_nodes(nodes), load_pods(trace)
        built = build_variants(pods, node_specs, chosen, seed)
    except (TraceError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    table = Table(title=f"variants of {trace.name} (build seed {seed})")
    for column in ("variant", "pods", "CPU-only % of CPU", "sharing % of GPU pods", "pinned % of GPU pods"):
        table.add_column(column, justify="right")
    table.add_column("multi-GPU % of GPU", justify="right")
    rows = [("default", mix(pods))] + [(v.name, mix(v.pods)) for v in built]
    for name, m in rows:
        table.add_row(
            name,
            f"{m['pods']:.0f}",
            *(
                f"{m[k]:.1f}"
                for k in ("cpu_only_cpu_pct", "share_pods_pct", "pinned_pods_pct", "multi_gpu_pct")
            ),
        )
    console.print(table)
    if out is not None:
        for v in built:
            write_pods(v.pods, out / f"openb_pod_list_{v.name}.csv", prefix=f"openb-{v.name}")
        console.print(f"{len(built)} pod lists written to {out}")
