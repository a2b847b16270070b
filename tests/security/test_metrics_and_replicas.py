"""Under `--auth`, neither `/metrics` nor a replica lets a caller around the gateway's tokens.

Probe: `/metrics` listed every project's services without a token, and replicas listened on
loopback with no token, so a local user could call any project's model directly.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import yaml
from fastapi import FastAPI

from kgpu.backends.local_devices import LocalDevices
from kgpu.backends.local_replica import LocalReplica
from kgpu.controlplane.auth import bootstrap_metrics_token
from kgpu.gateway.upstream import AiohttpUpstream
from kgpu.serving.gateway_secret import GATEWAY_SECRET_ENV, GatewayOnly, origin_of, replica_secret
from kgpu.serving.replica_spec import ReplicaSpec
from kgpu.telemetry.prometheus_config import write_prometheus_config
from tests.backends.test_local_devices import node
from tests.controlplane.test_auth import API, bearer, shared
from tests.live_server import serving

assert shared  # fixture: a server with auth, projects team-a and team-b


def test_metrics_need_the_metrics_token(shared, tmp_path):
    assert shared.get("/metrics").status_code == 401
    assert shared.get("/metrics", headers=bearer(shared.tokens["a"])).status_code == 403
    token = bootstrap_metrics_token(shared.app.state.access.store, tmp_path).read_text().strip()
    assert (tmp_path / "metrics-token").stat().st_mode & 0o777 == 0o600
    assert shared.get("/metrics", headers=bearer(token)).status_code == 200
    assert shared.get("/metrics", headers=bearer(shared.admin)).status_code == 200
    targets = shared.get(f"{API}/prometheus/targets", params={"role": "server"}, headers=bearer(token))
    assert targets.status_code == 200
    # It reads nothing else, and calls no model.
    assert shared.get(f"{API}/inferenceservices", headers=bearer(token)).status_code == 403
    assert shared.get(f"{API}/projects", headers=bearer(token)).status_code == 403
    embeddings = shared.post(
        "/v1/embeddings", json={"model": "team-a/x", "input": "x"}, headers=bearer(token)
    )
    assert embeddings.status_code == 401


def test_prometheus_config_sends_the_token_file(tmp_path):
    token_file = tmp_path / "metrics-token"
    token_file.write_text("kgpu_x_y\n")
    prometheus_yml = write_prometheus_config(
        tmp_path / "prom", "http://127.0.0.1:8000", token_file=token_file
    )[0]
    jobs = {job["job_name"]: job for job in yaml.safe_load(prometheus_yml.read_text())["scrape_configs"]}
    expected = {"type": "Bearer", "credentials_file": str(token_file.resolve())}
    assert jobs["kgpu"]["authorization"] == expected
    assert all(sd["authorization"] == expected for job in jobs.values() for sd in job["http_sd_configs"])
    assert "authorization" not in jobs["kgpu-replicas"]  # replicas' /metrics are scraped directly


def _replica_like() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/embeddings")
    async def embeddings() -> dict:
        return {"ok": True}

    @app.get("/metrics")
    async def metrics() -> str:
        return "up 1"

    return app


def test_a_replica_started_by_kgpu_answers_only_the_gateway(tmp_path):
    app = _replica_like()
    with serving(app) as url:
        # What the local backend puts in the replica's environment for this URL.
        replica = LocalReplica(
            service="team-a/embed",
            name="embed-0.team-a",
            node="n",
            spec=ReplicaSpec(command=()),
            assignment=LocalDevices(node()).assign("embed-0.team-a", None, "cpu", []),
            log_path=tmp_path / "log",
            hooks=None,
            template="t",
        )
        replica.port = int(url.rsplit(":", 1)[1])
        secret = replica._env()[GATEWAY_SECRET_ENV]
        assert secret == replica_secret(origin_of(url))
        app.user_middleware.clear()
        app.middleware_stack = None
        app.add_middleware(GatewayOnly, secret=secret)

        direct = httpx.post(f"{url}/v1/embeddings", json={})
        assert direct.status_code == 403
        forged = httpx.post(
            f"{url}/v1/embeddings",
            json={},
            headers={"x-kgpu-gateway-secret": replica_secret("http://127.0.0.1:1")},
        )
        assert forged.status_code == 403  # another replica's secret opens nothing here
        assert httpx.get(f"{url}/metrics").status_code == 200

        async def through_gateway() -> int:
            upstream = AiohttpUpstream()
            try:
                return (await upstream.post(f"{url}/v1/embeddings", b"{}", "application/json")).status
            finally:
                await upstream.close()

        assert asyncio.run(through_gateway()) == 200


@pytest.mark.parametrize("path", ["/v2/health/ready", "/metrics"])
def test_probes_and_scrapes_stay_open(path):
    app = FastAPI()
    app.get(path)(lambda: {"ok": True})
    app.add_middleware(GatewayOnly, secret="s")
    with serving(app) as url:
        assert httpx.get(url + path).status_code == 200
