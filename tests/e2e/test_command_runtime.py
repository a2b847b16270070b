"""A third-party model server as a `command` runtime through `kgpu up`: `transformers serve` (the
`transformers` preset) on the tiny random Llama, with the official openai client through the gateway;
its process killed and restarted, and the service scaled to 2 and back under load with no lost request.
(infinity-emb, an embedding server, is in tests/e2e/test_infinity_runtime.py.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import openai
import pytest

from tests.e2e.command_services import SERVICES, apply, replicas, scale_to_two_and_back, wait_ready

PATH = f"{SERVICES}/tchat"
MESSAGES = [{"role": "user", "content": "Say something."}]


def _replicas(platform) -> list[dict]:
    return replicas(platform, "tchat")


def _wait(platform, ready: int, restarts: int = 0) -> list[dict]:
    return wait_ready(platform, "tchat", ready, restarts=restarts)


@pytest.fixture(scope="module")
def tchat(platform, tiny_llm_dir: Path):
    document = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "tchat", "namespace": "default"},
        "spec": {
            "model": {"uri": str(tiny_llm_dir)},
            "runtime": {"preset": "transformers", "device": "cpu"},
            "replicas": 1,
        },
    }
    apply(platform, document)
    _wait(platform, 1)
    yield platform
    platform.http.delete(PATH)


def _client(platform) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_a_preset_that_is_not_installed_is_refused_at_apply_time(platform, tiny_llm_dir):
    document = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "vllm-here", "namespace": "default"},
        "spec": {"model": {"uri": str(tiny_llm_dir)}, "runtime": {"preset": "vllm"}},
    }
    response = platform.http.put(PATH.replace("tchat", "vllm-here"), json=document)
    assert response.status_code == 422
    assert "spec.runtime.preset" in response.text and "pip install vllm" in response.text


def test_the_openai_client_chats_with_transformers_serve_through_the_gateway(tchat):
    client = _client(tchat)
    whole = client.chat.completions.create(model="tchat", messages=MESSAGES, max_tokens=6)
    assert whole.choices[0].message.content is not None and whole.usage.completion_tokens > 0
    stream = client.chat.completions.create(model="tchat", messages=MESSAGES, max_tokens=6, stream=True)
    assert len([c for c in stream if c.choices and c.choices[0].delta.content]) >= 1
    replica = _replicas(tchat)[0]
    log = tchat.http.get(f"/apis/kgpu.dev/v1alpha1/replicas/{replica['name']}/log")
    assert log.status_code == 200 and "/v1/chat/completions" in log.text
    v2 = tchat.http.post("/v2/models/tchat/infer", json={"inputs": []})  # it speaks only OpenAI's API
    assert (
        v2.status_code == 400 and "speaks only the OpenAI API" in v2.text
    )  # the server's output, in kgpu logs


def test_a_killed_server_is_restarted_and_serves_again(tchat):
    [replica] = _replicas(tchat)
    os.kill(replica["pid"], signal.SIGKILL)
    [restarted] = _wait(tchat, 1, restarts=replica["restarts"] + 1)
    assert restarted["pid"] != replica["pid"]
    answer = _client(tchat).chat.completions.create(model="tchat", messages=MESSAGES, max_tokens=4)
    assert answer.usage.completion_tokens > 0


def test_scaling_to_two_and_back_under_load_loses_no_request(tchat):
    client = _client(tchat)

    def chat() -> str:
        answer = client.chat.completions.create(model="tchat", messages=MESSAGES, max_tokens=4)
        return "ok" if answer.usage.completion_tokens > 0 else "empty"

    results = scale_to_two_and_back(tchat, "tchat", chat)
    assert [r for r in results if r != "ok"] == []
