"""Cost of the gateway hop: a stub replica that answers at once, driven directly and through kgpu's gateway.

The stub returns a fixed 384-float embedding without computing anything, so the numbers measure HTTP
and routing only: what the gateway adds on top of a replica, and whether it holds up at high
concurrency (it must not collapse as connections grow). Each server runs in its own process.

    .venv/bin/python -m bench.gateway [--concurrency 1,64,256] [--duration 5] [--upstream aiohttp|httpx]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from bench.common.loadgen import run_closed_loop
from bench.common.servers import free_port
from bench.common.stub_replica import stub_app


class _HttpxUpstream:
    """The gateway's first upstream client, kept here to show why it was replaced (--upstream httpx)."""

    def __init__(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=300.0, limits=httpx.Limits(max_connections=2048, max_keepalive_connections=512)
        )

    async def post(self, url: str, body: bytes, content_type: str, extra_headers=None):
        from kgpu.gateway.upstream import ReplicaGone, UpstreamResponse

        try:
            r = await self._client.post(url, content=body, headers={"content-type": content_type})
        except httpx.TransportError as exc:
            raise ReplicaGone(str(exc)) from exc
        return UpstreamResponse(r.status_code, {"content-type": r.headers.get("content-type", "")}, r.content)

    async def close(self) -> None:
        await self._client.aclose()


def _gateway_app(upstream_url: str, upstream_kind: str = "aiohttp"):
    from kgpu.gateway.app import gateway_routes
    from kgpu.gateway.metrics import GatewayMetrics
    from kgpu.gateway.registry import ReplicaRegistry
    from kgpu.gateway.router import Router

    registry = ReplicaRegistry()
    router = Router(
        registry, GatewayMetrics(), upstream=_HttpxUpstream() if upstream_kind == "httpx" else None
    )
    app = FastAPI()
    app.include_router(
        gateway_routes(router, lambda m: "default/minilm" if m == "minilm" else None, lambda: ["minilm"])
    )

    @app.get("/healthz")
    async def healthz() -> dict:
        # Registered lazily: the registry's events belong to the server's event loop.
        if not registry.endpoints("default/minilm"):
            registry.add("default/minilm", "stub-0", upstream_url)
        return {}

    return app


def _serve(kind: str, port: int, upstream_url: str, upstream_kind: str = "aiohttp") -> None:
    app = stub_app() if kind == "stub" else _gateway_app(upstream_url, upstream_kind)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _wait(url: str, path: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", default="1,64,256")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--upstream", choices=("aiohttp", "httpx"), default="aiohttp", help="gateway's client"
    )
    parser.add_argument("--json", default=None, help="default bench/results/gateway-<upstream>.json")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    stub_port, gw_port = free_port(), free_port()
    stub_url, gw_url = f"http://127.0.0.1:{stub_port}", f"http://127.0.0.1:{gw_port}"
    procs = [
        ctx.Process(target=_serve, args=("stub", stub_port, ""), daemon=True),
        ctx.Process(target=_serve, args=("gateway", gw_port, stub_url, args.upstream), daemon=True),
    ]
    for p in procs:
        p.start()
    try:
        _wait(stub_url, "/docs")
        _wait(gw_url, "/healthz")
        bodies = [json.dumps({"model": "minilm", "input": f"sentence {i}"}).encode() for i in range(100)]
        rows = []
        for c in [int(x) for x in args.concurrency.split(",")]:
            for name, url in (("stub direct", stub_url), ("through gateway", gw_url)):
                r = run_closed_loop(url + "/v1/embeddings", bodies, c, args.duration, args.warmup).summary()
                rows.append({"path": name, **r})
                if not r["requests_ok"]:
                    print(f"{name} c={c}: no request succeeded: {r['error_kinds']}", flush=True)
                    continue
                print(
                    f"{name:16} c={c:<4} {r['req_per_s']:9.1f} req/s  p50 {r['p50_ms']:8.2f} ms  "
                    f"p99 {r['p99_ms']:8.2f} ms  errors {r['errors']}",
                    flush=True,
                )
    finally:
        for p in procs:
            p.terminate()
    out = Path(args.json or f"bench/results/gateway-{args.upstream}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"benchmark": "gateway-hop", "upstream": args.upstream, "rows": rows}, indent=2)
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
