"""infinity-emb, a third-party embedding server, as a `command` runtime through `kgpu up`.

`infinity_emb v2` (the `infinity` preset) on the example model's local directory, offline, from
its own virtual environment (`make infinity`: its pins clash with kgpu's), applied from the YAML in
README's "Run your own server". The official openai client gets embeddings through the gateway
equal to kgpu's own replica's for the same model; the server is killed and restarted; the service
scales to 2 and back under load with no lost request.
"""

from __future__ import annotations

import math
import os
import re
import signal
from pathlib import Path

import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.command_services import (
    INFINITY_BIN,
    SERVICES,
    apply,
    replicas,
    scale_to_two_and_back,
    wait_ready,
)

pytestmark = pytest.mark.skipif(
    not (INFINITY_BIN / "infinity_emb").exists(),
    reason=f"infinity-emb's environment {INFINITY_BIN.parent} is absent (`make infinity` creates it)",
)

NAME = "minilm-infinity"
README = Path(__file__).resolve().parents[2] / "README.md"
TEXTS = ["GPU inference on Kubernetes", "a sentence about something else entirely"]


def readme_service(name: str) -> dict:
    """The InferenceService named `name` among README's YAML blocks."""
    for block in re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S):
        for document in yaml.safe_load_all(block):
            if (document or {}).get("kind") == "InferenceService" and document["metadata"]["name"] == name:
                return document
    raise AssertionError(f"README has no InferenceService {name}")


def _client(platform) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform.url}/v1", api_key="unused", max_retries=0, timeout=60)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
def infinity(platform):
    document = readme_service(NAME)
    document["spec"]["replicas"] = 1
    apply(platform, document)
    wait_ready(platform, NAME, 1)
    yield platform
    platform.http.delete(f"{SERVICES}/{NAME}")


def test_the_openai_client_gets_infinitys_embeddings_through_the_gateway(infinity):
    answer = _client(infinity).embeddings.create(model=NAME, input=TEXTS)
    assert [len(item.embedding) for item in answer.data] == [384, 384]
    # The same model served by kgpu's own replica (the platform's `minilm`) embeds the same texts alike.
    kgpu_own = _client(infinity).embeddings.create(model="minilm", input=TEXTS)
    for theirs, ours in zip(answer.data, kgpu_own.data, strict=True):
        assert _cosine(theirs.embedding, ours.embedding) > 0.999
    assert _cosine(answer.data[0].embedding, answer.data[1].embedding) < 0.9
    [replica] = replicas(infinity, NAME)
    log = infinity.http.get(f"/apis/kgpu.dev/v1alpha1/replicas/{replica['name']}/log")
    assert log.status_code == 200 and "infinity_emb" in log.text and "/v1/embeddings" in log.text
    # infinity's own metrics, on kgpu's /metrics with the service's labels.
    mine = {"project": "default", "service": f"default/{NAME}", "replica": replica["name"]}
    samples = [
        sample
        for family in text_string_to_metric_families(infinity.http.get("/metrics").text)
        for sample in family.samples
        if mine.items() <= sample.labels.items()
    ]
    assert [s.value for s in samples if s.name == "kgpu_runtime_metrics_up"] == [1.0]
    assert len({s.name for s in samples}) > 10  # infinity's own series (process, Python, HTTP)


def test_a_killed_infinity_is_restarted_and_serves_again(infinity):
    [replica] = replicas(infinity, NAME)
    os.kill(replica["pid"], signal.SIGKILL)
    [restarted] = wait_ready(infinity, NAME, 1, restarts=replica["restarts"] + 1)
    assert restarted["pid"] != replica["pid"]
    answer = _client(infinity).embeddings.create(model=NAME, input="again")
    assert len(answer.data[0].embedding) == 384


def test_scaling_infinity_to_two_and_back_under_load_loses_no_request(infinity):
    client = _client(infinity)

    def embed() -> str:
        answer = client.embeddings.create(model=NAME, input=TEXTS)
        return "ok" if [len(d.embedding) for d in answer.data] == [384, 384] else "wrong shape"

    results = scale_to_two_and_back(infinity, NAME, embed)
    assert [r for r in results if r != "ok"] == []
    served = [r["name"] for r in replicas(infinity, NAME)]
    assert len(served) == 1
