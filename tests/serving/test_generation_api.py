"""The generation replica over HTTP: OpenAI chat and completions (whole and streamed), v2 generate, errors, metrics.

One replica app serves the tiny random Llama on a loopback port for the whole module (real HTTP, so streaming,
disconnects and the official client behave as they do in production).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from kgpu.serving.app import ReplicaConfig, create_app
from kgpu.serving.generation_metrics import RUNNING
from tests.live_server import serving
from tests.serving.helpers import metric_samples

SERVED = "tiny-chat"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime number."}]


@pytest.fixture(scope="module")
def replica_url(tiny_llm_dir: Path):
    app = create_app(ReplicaConfig(served_name=SERVED, model_uri=str(tiny_llm_dir), device="cpu"))
    with serving(app) as url:
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "replica never became ready"
            time.sleep(0.05)
        yield url


@pytest.fixture
def client(replica_url: str):
    with httpx.Client(base_url=replica_url, timeout=60) as http:
        yield http


def stream_events(client: httpx.Client, path: str, body: dict) -> list:
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]" or path.startswith("/v2")
    return [orjson.loads(line[6:]) for line in lines if line != "data: [DONE]"]


def test_streamed_chat_chunks_concatenate_to_the_whole_answer(client: httpx.Client) -> None:
    body = {"model": SERVED, "messages": CHAT, "max_tokens": 12, "temperature": 0}
    whole = client.post("/v1/chat/completions", json=body).json()
    events = stream_events(client, "/v1/chat/completions", {**body, "stream": True})
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(event["choices"][0]["delta"].get("content", "") for event in events)
    assert text == whole["choices"][0]["message"]["content"]
    assert events[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert whole["object"] == "chat.completion" and events[0]["object"] == "chat.completion.chunk"
    assert "usage" not in events[0]  # only with stream_options.include_usage


def test_completions_stream_with_usage_matches_the_whole_answer(client: httpx.Client) -> None:
    body = {"model": SERVED, "prompt": "def fib(n):", "max_tokens": 10, "temperature": 0}
    whole = client.post("/v1/completions", json=body).json()
    events = stream_events(
        client, "/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == whole["choices"][0]["text"]
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
    assert all(e["usage"] is None for e in events[:-1])
    assert whole["usage"]["completion_tokens"] == 10 or whole["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_ends_with_length_and_counts(client: httpx.Client) -> None:
    body = {"model": SERVED, "prompt": "import os", "max_tokens": 5, "temperature": 0}
    answer = client.post("/v1/completions", json=body).json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 5
    assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"] + 5


def test_stop_cuts_the_answer_and_ends_with_stop(client: httpx.Client) -> None:
    body = {"model": SERVED, "prompt": "import os", "max_tokens": 20, "temperature": 0}
    full = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    cut = next(i for i in range(4, len(full) - 3) if full.find(full[i : i + 3]) == i)
    stop = full[cut : cut + 3]
    for stream in (False, True):
        request = {**body, "stop": [stop], "stream": stream}
        if stream:
            events = stream_events(client, "/v1/completions", request)
            text = "".join(e["choices"][0]["text"] for e in events)
            finish = events[-1]["choices"][0]["finish_reason"]
        else:
            choice = client.post("/v1/completions", json=request).json()["choices"][0]
            text, finish = choice["text"], choice["finish_reason"]
        assert (text, finish) == (full[:cut], "stop")


def test_the_same_seed_gives_the_same_sampled_answer(client: httpx.Client) -> None:
    body = {"model": SERVED, "prompt": "class", "max_tokens": 16, "temperature": 1.0, "seed": 42}
    texts = [client.post("/v1/completions", json=body).json()["choices"][0]["text"] for _ in range(2)]
    other = client.post("/v1/completions", json={**body, "seed": 43}).json()["choices"][0]["text"]
    assert texts[0] == texts[1] != other


BAD = [
    ({"prompt": "x", "n": 2}, "n"),
    ({"prompt": "x", "temperature": 3}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": "ten"}, "max_tokens"),
    ({"prompt": "x", "stop": [1]}, "stop"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "x", "seed": 1.5}, "seed"),
    ({"prompt": "x", "logprobs": 3}, "logprobs"),
    ({"prompt": "x", "presence_penalty": 1}, "presence_penalty"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "top_k": 5}, "top_k"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [1, 99999]}, "prompt"),
    ({}, "prompt"),
]


@pytest.mark.parametrize(("fields", "param"), BAD, ids=[param for _, param in BAD])
def test_bad_completions_fields_get_a_400_naming_them(client: httpx.Client, fields: dict, param: str) -> None:
    response = client.post("/v1/completions", json={"model": SERVED, **fields})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]


BAD_CHAT = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ({"messages": CHAT, "tools": [{"type": "function"}]}, "tools"),
    ({"messages": CHAT, "max_tokens": 1, "max_completion_tokens": 1}, "max_tokens"),
    ({"messages": CHAT, "response_format": {"type": "json_object"}}, "response_format"),
]


@pytest.mark.parametrize(("fields", "param"), BAD_CHAT, ids=[param for _, param in BAD_CHAT])
def test_bad_chat_fields_get_a_400_naming_them(client: httpx.Client, fields: dict, param: str) -> None:
    response = client.post("/v1/chat/completions", json={"model": SERVED, **fields})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_prompt_or_max_tokens_past_the_context_is_refused_with_both_numbers(client: httpx.Client) -> None:
    long_prompt = "word " * 400
    response = client.post("/v1/completions", json={"model": SERVED, "prompt": long_prompt})
    assert response.status_code == 400
    assert "context is 256 tokens" in response.json()["error"]["message"]
    response = client.post("/v1/completions", json={"model": SERVED, "prompt": "hi", "max_tokens": 255})
    message = response.json()["error"]["message"]
    assert response.status_code == 400 and "255" in message and "256" in message
    too_long = client.post(
        "/v1/chat/completions", json={"model": SERVED, "messages": CHAT, "max_completion_tokens": 10_000}
    )
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_completion_tokens"


def test_an_unknown_model_is_a_404(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json={"model": "other", "prompt": "x"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_v2_generate_and_generate_stream_agree(client: httpx.Client) -> None:
    body = {"text_input": "def main():", "parameters": {"max_tokens": 8, "temperature": 0}}
    whole = client.post(f"/v2/models/{SERVED}/generate", json=body).json()
    events = stream_events(client, f"/v2/models/{SERVED}/generate_stream", body)
    assert "".join(event["text_output"] for event in events) == whole["text_output"]
    assert whole["finish_reason"] == events[-1]["finish_reason"]
    assert whole["model_name"] == SERVED and whole["generated_tokens"] <= 8
    bad = client.post(f"/v2/models/{SERVED}/generate", json={"text_input": "x", "parameters": {"beam": 2}})
    assert bad.status_code == 400 and "beam" in bad.json()["error"]


async def test_a_client_that_disconnects_mid_stream_frees_its_sequence(replica_url: str) -> None:
    body = {"model": SERVED, "prompt": "x", "max_tokens": 240, "temperature": 0, "stream": True}
    async with httpx.AsyncClient(base_url=replica_url, timeout=60) as http:
        async with http.stream("POST", "/v1/completions", json=body) as response:
            async for _ in response.aiter_lines():
                break
            running = metric_samples((await http.get("/metrics")).text)[RUNNING]
            assert running == 1
        for _ in range(200):
            if metric_samples((await http.get("/metrics")).text)[RUNNING] == 0:
                break
            await asyncio.sleep(0.02)
        samples = metric_samples((await http.get("/metrics")).text)
    assert samples[RUNNING] == 0
    assert samples["kgpu_generation_time_to_first_token_seconds_count"] >= 1
    assert samples["kgpu_generation_generated_tokens_total"] >= 1


def test_the_official_openai_client_streams_and_answers(replica_url: str) -> None:
    client = openai.OpenAI(base_url=f"{replica_url}/v1", api_key="unused", max_retries=0)
    whole = client.chat.completions.create(model=SERVED, messages=CHAT, max_tokens=8, temperature=0)
    pieces = client.chat.completions.create(
        model=SERVED, messages=CHAT, max_tokens=8, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in pieces if chunk.choices)
    assert text == whole.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="'n'"):
        client.chat.completions.create(model=SERVED, messages=CHAT, n=2)


def test_a_model_without_chat_template_refuses_chat_with_a_400(tiny_llm_dir: Path, tmp_path: Path) -> None:
    plain = shutil.copytree(tiny_llm_dir, tmp_path / "plain")
    (plain / "chat_template.jinja").unlink()
    app = create_app(ReplicaConfig(served_name=SERVED, model_uri=str(plain), device="cpu"))
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        while http.get("/v2/health/ready").status_code != 200:
            time.sleep(0.05)
        response = http.post("/v1/chat/completions", json={"model": SERVED, "messages": CHAT})
        assert response.status_code == 400 and "chat template" in response.json()["error"]["message"]
        assert (
            http.post("/v1/completions", json={"model": SERVED, "prompt": "x", "max_tokens": 2}).status_code
            == 200
        )
