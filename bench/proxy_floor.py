"""What one proxy hop costs at concurrency 1 with each upstream client the gateway could use, and what
kgpu's whole gateway costs beside them: the floor under bench.command_overhead's figure.

Against the stub replica (bench/common/stub_replica.py, a server that answers at once), in the same
run and paired like bench.command_overhead (each body to every target in turn, order rotating):

- `direct`: the stub itself;
- `uvicorn+aiohttp`: a bare ASGI app on uvicorn (kgpu's server settings, kgpu.http_limits) that
  forwards each POST with aiohttp's client, as the gateway did for whole answers;
- `uvicorn+keepalive`: the same app forwarding with kgpu.gateway.keepalive_client, the gateway's client
  for whole answers now;
- `kgpu gateway`: kgpu's gateway app (the server's app with its request guard and routes) with the
  stub as the service's one replica.

    .venv/bin/python -m bench.proxy_floor [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench.common.latency_pairs import added_p50, paired
from bench.common.machine import child_env, machine_facts
from bench.common.results import write_results
from bench.common.servers import ServerProcess, free_port

BENCH_DIR = Path(__file__).resolve().parent
console = Console(width=None if sys.stdout.isatty() else 132)
BODY = json.dumps({"model": "minilm", "input": ["a short sentence to embed, as clients send them"]}).encode()
PROXIES = ("uvicorn+aiohttp", "uvicorn+keepalive", "kgpu gateway")


def proxy_app(client: str, upstream: str):
    """A bare ASGI app forwarding every POST's body to `upstream` + path with `client`."""
    from kgpu.gateway.keepalive_client import KeepAliveClient

    state: dict = {}

    async def forward(path: str, body: bytes) -> tuple[int, bytes]:
        headers = {"content-type": "application/json"}
        if client == "aiohttp":
            import aiohttp

            if "session" not in state:
                state["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            async with state["session"].post(upstream + path, data=body, headers=headers) as response:
                return response.status, await response.read()
        status, _, payload = await state.setdefault("client", KeepAliveClient()).post(
            upstream + path, body, headers
        )
        return status, payload

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, payload = await forward(scope["path"], body)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


def gateway_app(upstream: str, state_dir: Path):
    """kgpu's server app (no control plane loops) whose service `minilm` has the stub as its replica."""
    from kgpu.controlplane.platform import Platform, PlatformConfig
    from kgpu.controlplane.request_guard import guard_settings
    from kgpu.controlplane.server import create_server_app

    platform = Platform(PlatformConfig(state_dir=state_dir))
    platform.resolve_model = lambda model: "default/minilm" if model == "minilm" else None
    platform.router.registry.add("default/minilm", "minilm-0", upstream)
    return create_server_app(platform, guard=guard_settings("127.0.0.1"))


def serve(target: str, port: int, upstream: str) -> None:
    """Run one proxy (`python -m bench.proxy_floor --serve TARGET PORT UPSTREAM`)."""
    import uvicorn

    from kgpu.http_limits import uvicorn_limits

    if target == "kgpu gateway":
        app = gateway_app(upstream, Path(tempfile.mkdtemp(prefix="kgpu-proxy-floor-")))
        lifespan = "off"  # the control plane's own loops are not what is measured
    else:
        app, lifespan = proxy_app(target.split("+")[1], upstream), "auto"
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan, **uvicorn_limits())


def wait_answering(url: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, content=BODY, headers={"content-type": "application/json"}).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer 200 within {deadline_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="paired requests per target")
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "proxy-floor.json")
    parser.add_argument("--serve", nargs=3, metavar=("TARGET", "PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2])
        return 0
    env = child_env()
    logs = args.json.parent / "logs"
    stub_port = free_port()
    stub = ServerProcess(
        "stub",
        [sys.executable, "-m", "bench.common.stub_replica", "--port", str(stub_port)],
        stub_port,
        logs / "proxy-floor-stub.log",
    )
    servers = [stub]
    urls = {"direct": f"{stub.base_url}/v1/embeddings"}
    try:
        stub.start(env=env)
        wait_answering(urls["direct"])
        for name in PROXIES:
            port = free_port()
            command = [sys.executable, "-m", "bench.proxy_floor", "--serve", name, str(port), stub.base_url]
            server = ServerProcess(name, command, port, logs / f"proxy-floor-{name.replace(' ', '-')}.log")
            servers.append(server)
            server.start(env=env)
            urls[name] = f"{server.base_url}/v1/embeddings"
            wait_answering(urls[name])
        console.print(f"{args.requests} paired requests per target at concurrency 1")
        latencies = asyncio.run(paired(urls, [BODY], args.requests, 20, args.gap_ms / 1000))
    finally:
        for server in servers:
            server.stop()
    added = {name: added_p50(latencies["direct"], latencies[name]) for name in PROXIES}
    table = Table(title="one proxy hop in front of a server that answers at once (CPU, same run)")
    for column in ("target", "p50 ms", "p50 added ms", "95% interval", "median paired difference ms"):
        table.add_column(column, justify="left" if column == "target" else "right")
    p50 = {name: sorted(values)[len(values) // 2] for name, values in latencies.items()}
    table.add_row("direct", f"{p50['direct']:.2f}", "", "", "")
    for name in PROXIES:
        low, high = added[name]["ci95_ms"]
        table.add_row(
            name,
            f"{p50[name]:.2f}",
            f"{added[name]['p50_added_ms']:+.2f}",
            f"{low:+.2f} to {high:+.2f}",
            f"{added[name]['median_paired_difference_ms']:+.2f}",
        )
    console.print(table)
    write_results(args.json, "proxy_floor", vars(args), machine_facts("cpu"), p50_ms=p50, added=added)
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
