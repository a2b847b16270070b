"""`kgpu prometheus-config` and `kgpu top`: commands that look at the platform's metrics."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from kgpu.cli.client import server_url

console = Console()
err = Console(stderr=True)


def prometheus_config(
    output: Path = typer.Option(..., "--output", "-o", help="directory for prometheus.yml and rules/"),
    server: str = typer.Option(
        None, "--server", "-s", help="kgpu server URL (default $KGPU_SERVER or http://127.0.0.1:8000)"
    ),
    scrape_interval: str = typer.Option(
        "15s", "--scrape-interval", help="scrape and rule evaluation interval"
    ),
    queue_target: float = typer.Option(
        0.25, "--queue-target", help="p99 queue time (seconds) above which KgpuQueueTimeAboveTarget fires"
    ),
    token_file: Path = typer.Option(
        None,
        "--token-file",
        help="file holding the server's metrics token (kgpu server --auth writes <state-dir>/metrics-token)",
    ),
) -> None:
    """Write a Prometheus config (scrape targets by HTTP service discovery), recording and alert rules."""
    from kgpu.telemetry.prometheus_config import write_prometheus_config

    try:
        paths = write_prometheus_config(output, server_url(server), scrape_interval, queue_target, token_file)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except OSError as exc:  # a file where a directory should be, no permission, a full disk
        err.print(f"[red]error:[/red] --output: cannot write {output}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    for path in paths:
        console.print(f"wrote {path}")
    console.print(f"run: prometheus --config.file={paths[0]}")


def register(app: typer.Typer) -> None:
    app.command("prometheus-config")(prometheus_config)
    app.command("top")(top)


def top(
    interval: float = typer.Option(2.0, "--interval", "-i", min=0.1, help="seconds between refreshes"),
    once: bool = typer.Option(
        False, "--once", help="print one frame (two scrapes --interval apart) and exit"
    ),
    server: str = typer.Option(
        None, "--server", "-s", help="kgpu server URL (default $KGPU_SERVER or http://127.0.0.1:8000)"
    ),
) -> None:
    """Live view of GPUs (utilization, memory, power, replicas) and services (rps, p99, replicas)."""
    import time

    from rich.live import Live

    from kgpu.cli.client import ApiError, KgpuClient
    from kgpu.cli.top import render_frame, scrape

    try:
        client = KgpuClient(server)
    except ApiError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    try:
        previous = scrape(client)
        time.sleep(interval)
        current = scrape(client)
        if once:
            console.print(render_frame(previous, current))
            return
        with Live(render_frame(previous, current), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                previous, current = current, scrape(client)
                live.update(render_frame(previous, current), refresh=True)
    except ApiError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
