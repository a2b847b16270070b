"""`kgpu up`: start the embedded platform, apply files, show progress until the services serve."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import uvicorn
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table

from kgpu import API_VERSION, event_loop
from kgpu.api.io import load_resource_file
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.request_guard import GuardSettings, guard_settings
from kgpu.controlplane.resources import PLURAL_BY_KIND
from kgpu.controlplane.server import create_server_app
from kgpu.http_limits import uvicorn_limits
from kgpu.multicluster.health import DEFAULT_GRACE_S

READY_TIMEOUT_S = 900.0


def _progress_view(services: list[dict], replicas: list[dict], elapsed: float) -> Group:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("SERVICE", "REPLICA", "STATUS", "DEVICE", "PROGRESS"):
        table.add_column(column, no_wrap=column != "PROGRESS")
    for item in services:
        key = f"{item['metadata'].get('namespace', 'default')}/{item['metadata']['name']}"
        own = [r for r in replicas if r["service"] == key]
        if not own:
            table.add_row(
                key, "-", item.get("status", {}).get("phase", "Pending"), "-", "waiting for the reconciler"
            )
        for r in own:
            table.add_row(key, r["name"], r["phase"], r["device"] or "-", r["message"] or "")
    return Group(Spinner("dots", text=f" starting services ({elapsed:.0f}s)"), table)


def _summary(public_url: str, services: list[dict]) -> Panel:
    lines = []
    for item in services:
        name = item["metadata"]["name"]
        status = item.get("status") or {}
        lines.append(f"[bold]{name}[/bold]: {status.get('readyReplicas', 0)}/{status.get('replicas')} ready")
    first = services[0]["metadata"]["name"] if services else "minilm"
    lines += [
        "",
        f"OpenAI endpoint:  {public_url}/v1/embeddings",
        f"Open Inference:   {public_url}/v2/models/{first}/infer",
        f"Metrics:          {public_url}/metrics",
        f"API docs:         {public_url}/docs",
        f"Console:          {public_url}/console",
        "",
        f"curl {public_url}/v1/embeddings \\",
        "  -H 'content-type: application/json' \\",
        f'  -d \'{{"model": "{first}", "input": "GPUs are fast"}}\'',
        "",
        f"kgpu get services -o wide  |  kgpu logs {first}",
        "Ctrl-C stops the platform; replicas finish their requests first.",
    ]
    return Panel("\n".join(lines), title="kgpu is serving", border_style="green")


async def _apply_and_watch(console: Console, public_url: str, files: list[Path]) -> None:
    async with httpx.AsyncClient(base_url=public_url, timeout=30.0) as http:
        applied: list[tuple[str, str, str]] = []
        for path in files:
            for resource in load_resource_file(path):
                plural = PLURAL_BY_KIND[resource.kind]
                ns, name = resource.metadata.namespace, resource.metadata.name
                body = resource.model_dump(by_alias=True, mode="json", exclude_none=True)
                response = await http.put(f"/apis/{API_VERSION}/namespaces/{ns}/{plural}/{name}", json=body)
                if response.status_code >= 400:
                    console.print(f"[red]error[/red] applying {path}: {response.json()['error']['message']}")
                    continue
                verb = "created" if response.status_code == 201 else "configured"
                console.print(f"{resource.kind.lower()}/{name} {verb}")
                applied.append((plural, ns, name))

        services_paths = [
            f"/apis/{API_VERSION}/namespaces/{ns}/{plural}/{name}"
            for plural, ns, name in applied
            if plural == "inferenceservices"
        ]
        started = time.monotonic()
        services: list[dict] = []
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while time.monotonic() - started < READY_TIMEOUT_S:
                services = [(await http.get(p)).json() for p in services_paths]
                replicas = (await http.get(f"/apis/{API_VERSION}/replicas")).json()["items"]
                live.update(_progress_view(services, replicas, time.monotonic() - started))
                if all(s["status"]["phase"] in ("Ready", "ScaledToZero") for s in services):
                    break
                await asyncio.sleep(0.25)
        if services and all(s["status"]["phase"] in ("Ready", "ScaledToZero") for s in services):
            console.print(_summary(public_url, services))
        else:
            console.print(
                "[yellow]services are not ready yet; `kgpu get replicas -o wide` and `kgpu logs` say why, `kgpu doctor` checks this machine[/yellow]"
            )


def run_up(
    files: list[Path],
    host: str,
    port: int,
    state_dir: Path,
    database_url: str | None,
    guard: GuardSettings | None = None,
    cluster_grace_s: float = DEFAULT_GRACE_S,
) -> None:
    console = Console()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    public_url = f"http://{host}:{port}"
    config = PlatformConfig(
        state_dir=state_dir, public_url=public_url, database_url=database_url, cluster_grace_s=cluster_grace_s
    )
    platform = Platform(config)
    app = create_server_app(platform, guard=guard or guard_settings(host))
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30, **uvicorn_limits()
        )
    )
    inv = platform.inventory
    gpus = ", ".join(f"{g.name} ({g.memory_total_mib} MiB)" for g in inv.gpus) or f"none ({inv.note})"
    console.print(f"kgpu on [bold]{inv.hostname}[/bold]: {inv.cpu_count} CPU cores, GPUs: {gpus}")
    console.print(f"state in {state_dir.resolve()}; API and gateway on {public_url}")

    async def main() -> None:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                await serving
                raise SystemExit(f"the server could not start on {public_url} (port in use?)")
            await asyncio.sleep(0.05)
        watcher = asyncio.create_task(_apply_and_watch(console, public_url, files))
        await serving
        watcher.cancel()

    event_loop.after_uvicorn_stops(logging.getLogger("kgpu"))
    event_loop.run(main())
