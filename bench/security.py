"""What anonymous callers can take from the gateway: wrong-token floods and abandoned requests.

1. Token flood. Legitimate clients (closed loop, a valid token) call `/v1/embeddings` on a gateway
   with token checks, in front of a stub replica that answers at once (so the gateway's own CPU is
   what is measured). Then the same while 64 more clients, from another loopback address
   (127.0.0.2), send a known token id with a wrong secret as fast as they get answers. The same run
   measures the check as it was before (the secret stored with PBKDF2, failures neither limited
   nor delayed), so
   the ratio against it comes from the same machine and minute.
2. Abandoned requests. 2,100 clients call a service with no ready replica (held by the gateway,
   as during a scale from zero) and give up after 5 s. The gateway's hold queue is read every 50 ms
   after they have gone: it should be empty within 1 s, and a new request should be held again
   rather than refused as if the queue were full.

    .venv/bin/python -m bench.security [--duration 5] [--clients 8] [--attackers 64] [--abandoned 2100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, text

from bench.common.loadgen import run_closed_loop
from bench.common.machine import machine_facts
from bench.common.results import write_results
from bench.common.servers import free_port
from bench.common.stub_replica import stub_app

SERVICE = "default/minilm"
ATTACK_SOURCE = "127.0.0.2"  # another client address on the loopback network
BODIES = [json.dumps({"model": "minilm", "input": f"sentence {i}"}).encode() for i in range(100)]


def _gateway_app(replica_url: str | None, database_url: str | None, limited: bool) -> FastAPI:
    """kgpu's gateway routes; with `database_url`, token checks against that database's tokens."""
    from kgpu import auth_failures
    from kgpu.auth_failures import FailureLimiter
    from kgpu.controlplane.auth import AuthStore, TokenGuard
    from kgpu.gateway.app import gateway_routes
    from kgpu.gateway.metrics import GatewayMetrics
    from kgpu.gateway.registry import ReplicaRegistry
    from kgpu.gateway.router import Router

    verify = None
    if database_url is not None:
        if not limited:  # the check as it was: no limits, and a failed check answered at once
            auth_failures.FAILURE_DELAY_S = 0.0
        unlimited = FailureLimiter(per_address=10**9, per_token_id=10**9)
        verify = TokenGuard(AuthStore(create_engine(database_url)), None if limited else unlimited).check
    registry = ReplicaRegistry()
    router = Router(registry, GatewayMetrics())
    app = FastAPI()
    app.include_router(
        gateway_routes(
            router, lambda m: SERVICE if m.endswith("minilm") else None, lambda: ["minilm"], verify
        )
    )

    @app.get("/held")
    async def held() -> dict:
        # Replica registered lazily: the registry's events belong to the server's event loop.
        if replica_url and not registry.endpoints(SERVICE):
            registry.add(SERVICE, "stub-0", replica_url)
        return {"held": router.held(SERVICE)}

    return app


def _serve(kind: str, port: int, replica_url: str | None, database_url: str | None, limited: bool) -> None:
    app = stub_app() if kind == "stub" else _gateway_app(replica_url, database_url, limited)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def _start(kind: str, replica_url: str | None = None, database_url: str | None = None, limited: bool = True):
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(kind, port, replica_url, database_url, limited), daemon=True
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/{'docs' if kind == 'stub' else 'held'}", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"{kind} server did not start")


def _tokens(database_url: str, legacy: bool) -> tuple[str, str]:
    """(a valid token, a wrong secret on a known token id); `legacy`: that id stored with PBKDF2."""
    from kgpu.controlplane.auth import AuthStore, legacy_hash_secret

    engine = create_engine(database_url)
    store = AuthStore(engine)
    store.create_project("default")
    valid = store.create_token("default", "admin", "client")
    victim = store.create_token("default", "viewer", "known-id")
    victim_id, secret = victim.removeprefix("kgpu_").split("_", 1)
    if legacy:  # as an earlier release stored it
        with engine.begin() as conn:
            salt = conn.execute(
                text("SELECT salt FROM api_tokens WHERE token_id = :i"), {"i": victim_id}
            ).scalar()
            conn.execute(
                text("UPDATE api_tokens SET secret_hash = :h, hash_scheme = NULL WHERE token_id = :i"),
                {"h": legacy_hash_secret(secret, bytes.fromhex(salt)), "i": victim_id},
            )
    engine.dispose()
    return valid, f"kgpu_{victim_id}_{'x' * len(secret)}"


def _attack(url: str, token: str, clients: int, seconds: float, counts: dict) -> None:
    """`clients` closed-loop clients sending `token` from ATTACK_SOURCE for `seconds`."""

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=clients, local_addr=(ATTACK_SOURCE, 0))
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        stop = time.monotonic() + seconds
        async with aiohttp.ClientSession(connector=connector) as session:

            async def client() -> None:
                while time.monotonic() < stop:
                    try:
                        async with session.post(url, data=BODIES[0], headers=headers) as response:
                            await response.read()
                            key = str(response.status)
                    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                        key = type(exc).__name__
                    counts[key] = counts.get(key, 0) + 1

            await asyncio.gather(*(client() for _ in range(clients)))

    asyncio.run(main())


def _attack_process(url: str, token: str, clients: int, seconds: float, queue) -> None:
    counts: dict = {}
    _attack(url, token, clients, seconds, counts)
    queue.put(counts)


def token_flood(args, workdir: Path) -> list[dict]:
    stub, stub_url = _start("stub")
    rows = []
    try:
        for check, legacy, limited in (
            ("hmac-sha256, limited", False, True),
            ("pbkdf2, unlimited (before)", True, False),
        ):
            database_url = f"sqlite:///{workdir / ('legacy' if legacy else 'now')}.db"
            valid, wrong = _tokens(database_url, legacy)
            gateway, url = _start("gateway", stub_url, database_url, limited)
            try:
                headers = {"authorization": f"Bearer {valid}"}
                for attackers in (0, args.attackers):
                    ctx = multiprocessing.get_context("spawn")
                    queue = ctx.Queue()
                    attack = None
                    if attackers:
                        seconds = args.warmup + args.duration + 1.0
                        attack = ctx.Process(
                            target=_attack_process,
                            args=(url + "/v1/embeddings", wrong, attackers, seconds, queue),
                        )
                        attack.start()
                        time.sleep(0.5)  # the flood is on before the window opens
                    r = run_closed_loop(
                        url + "/v1/embeddings",
                        BODIES,
                        args.clients,
                        args.duration,
                        args.warmup,
                        headers=headers,
                    ).summary()
                    answers = {}
                    if attack is not None:
                        answers = queue.get(timeout=60)
                        attack.join(timeout=30)
                    rows.append({"check": check, "attackers": attackers, "attacker_answers": answers, **r})
                    print(
                        f"{check:28} attackers {attackers:3}  legit {r['req_per_s']:8.1f} req/s  "
                        f"p50 {r['p50_ms']} ms  errors {r['errors']}  attackers got {answers}",
                        flush=True,
                    )
            finally:
                gateway.terminate()
    finally:
        stub.terminate()
    return rows


async def _abandon(url: str, count: int, client_timeout_s: float) -> dict:
    connector = aiohttp.TCPConnector(limit=count)
    timeout = aiohttp.ClientTimeout(total=client_timeout_s)
    outcomes: dict[str, int] = {}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            try:
                async with session.post(
                    url + "/v1/embeddings", data=BODIES[0], headers={"content-type": "application/json"}
                ) as response:
                    key = str(response.status)
            except asyncio.TimeoutError:
                key = "gave up"
            except aiohttp.ClientError as exc:
                key = type(exc).__name__
            outcomes[key] = outcomes.get(key, 0) + 1

        await asyncio.gather(*(one() for _ in range(count)))
    return outcomes


def abandoned(args) -> dict:
    gateway, url = _start("gateway")  # no replica: every request is held
    try:
        started = time.monotonic()
        outcomes = asyncio.run(_abandon(url, args.abandoned, args.client_timeout))
        gone_at = time.monotonic()
        held_at_gone = httpx.get(url + "/held").json()["held"]
        samples = []
        empty_after = None
        while time.monotonic() - gone_at < 3.0:
            held = httpx.get(url + "/held").json()["held"]
            samples.append([round(time.monotonic() - gone_at, 3), held])
            if held == 0 and empty_after is None:
                empty_after = time.monotonic() - gone_at
                break
            time.sleep(0.05)
        held_1s = next((h for t, h in samples if t >= 1.0), samples[-1][1])
        fresh = asyncio.run(_abandon(url, 1, 0.5))  # "gave up": held, not refused as if the queue were full
    finally:
        gateway.terminate()
    result = {
        "requests": args.abandoned,
        "client_timeout_s": args.client_timeout,
        "outcomes": outcomes,
        "clients_gone_after_s": round(gone_at - started, 2),
        "held_when_clients_gone": held_at_gone,
        "held_1s_later": held_1s if empty_after is None or empty_after >= 1.0 else 0,
        "empty_after_s": None if empty_after is None else round(empty_after, 3),
        "next_request": fresh,
        "samples": samples,
    }
    print(
        f"abandoned {args.abandoned} (client timeout {args.client_timeout} s): {outcomes}; held when they "
        f"had gone {held_at_gone}, empty after {result['empty_after_s']} s; next request {fresh}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=8, help="legitimate closed-loop clients")
    parser.add_argument("--attackers", type=int, default=64, help="clients sending wrong tokens")
    parser.add_argument("--abandoned", type=int, default=2100)
    parser.add_argument("--client-timeout", type=float, default=5.0)
    parser.add_argument("--json", default="bench/results/security.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        rows = token_flood(args, Path(workdir))
    by = {(r["check"], r["attackers"]): r["req_per_s"] for r in rows}
    ratios = {
        check: round(by[(check, args.attackers)] / by[(check, 0)], 3) if by[(check, 0)] else None
        for check in {r["check"] for r in rows}
    }
    for check, ratio in ratios.items():
        print(f"{check:28} legit throughput under the flood / without it: {ratio}")
    held = abandoned(args)
    write_results(
        Path(args.json),
        "security",
        vars(args),
        {**machine_facts("cpu"), "cpu_cores": os.cpu_count()},
        token_flood={"rows": rows, "ratio_under_flood": ratios, "target_ratio": 0.8},
        abandoned_requests={**held, "target": "0 held within 1 s"},
    )
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
