"""Text generation through the whole platform: examples/chat.yaml applied to `kgpu up`, two CPU replicas of the
tiny random Llama, the official openai client through the gateway, and a replica killed under streaming load.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest
import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chat.yaml"
PATH = "/apis/kgpu.dev/v1alpha1/namespaces/default/inferenceservices/chat"
MESSAGES = [{"role": "user", "content": "Write a haiku about GPUs."}]


def _chat_replicas(platform) -> list[dict]:
    return platform.replicas(service="default/chat")


def _wait_ready(platform, count: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [r for r in _chat_replicas(platform) if r["phase"] == "Ready"]
        if len(ready) == count and len(_chat_replicas(platform)) == count:
            return
        time.sleep(0.3)
    log = (platform.workdir / "kgpu-up.log").read_text()[-4000:]
    raise AssertionError(f"chat not ready with {count} replicas: {_chat_replicas(platform)}\n{log}")


@pytest.fixture(scope="module")
def chat(platform, tiny_llm_dir: Path):
    """examples/chat.yaml with the model written for this run, on the CPU, at two replicas."""
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"]["model"]["uri"] = str(tiny_llm_dir)
    document["spec"]["replicas"] = 2
    del document["spec"]["autoscaling"]  # a fixed count: the kill test needs both replicas
    document["spec"]["runtime"]["device"] = "cpu"
    response = platform.http.put(
        PATH, content=yaml.safe_dump(document), headers={"content-type": "application/yaml"}
    )
    assert response.status_code in (200, 201), response.text
    _wait_ready(platform, 2)
    yield platform
    platform.http.delete(PATH)


def test_the_openai_client_chats_through_the_gateway_streamed_and_whole(chat) -> None:
    client = openai.OpenAI(base_url=f"{chat.url}/v1", api_key="unused", max_retries=0)
    whole = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    completion = client.completions.create(model="chat", prompt="def main():", max_tokens=5, temperature=0)
    assert (
        completion.choices[0].finish_reason in ("length", "stop") and completion.usage.completion_tokens <= 5
    )
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="chat", messages=MESSAGES, temperature=5)


def test_the_async_openai_client_streams_concurrently_through_the_gateway(chat) -> None:
    async def run() -> tuple[list[str], list[str]]:
        client = openai.AsyncOpenAI(base_url=f"{chat.url}/v1", api_key="unused", max_retries=0)
        prompts = [f"Item {i}: " for i in range(6)]

        async def streamed(prompt: str) -> str:
            stream = await client.completions.create(
                model="chat", prompt=prompt, max_tokens=10, temperature=0, stream=True
            )
            return "".join([chunk.choices[0].text async for chunk in stream])

        async def whole(prompt: str) -> str:
            answer = await client.completions.create(
                model="chat", prompt=prompt, max_tokens=10, temperature=0
            )
            return answer.choices[0].text

        try:
            return (
                list(await asyncio.gather(*(streamed(p) for p in prompts))),
                list(await asyncio.gather(*(whole(p) for p in prompts))),
            )
        finally:
            await client.close()

    streamed, whole = asyncio.run(run())
    assert streamed == whole


def test_v2_generate_stream_through_the_gateway_and_a_disconnect_frees_the_sequence(chat) -> None:
    body = {"text_input": "def main():", "parameters": {"max_tokens": 6, "temperature": 0}}
    with httpx.Client(base_url=chat.url, timeout=60) as http:
        whole = http.post("/v2/models/chat/generate", json=body).json()
        with http.stream("POST", "/v2/models/chat/generate_stream", json=body) as response:
            events = [orjson.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        assert "".join(event["text_output"] for event in events) == whole["text_output"]
        generated_before = _replica_sum(chat, "kgpu_generation_generated_tokens_total")
        long = {"model": "chat", "prompt": "x", "max_tokens": 240, "temperature": 0, "stream": True}
        with http.stream("POST", "/v1/completions", json=long) as response:
            next(response.iter_lines())  # the answer has started; the client leaves
        deadline = time.monotonic() + 10
        while _replica_sum(chat, "kgpu_generation_running_sequences") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _replica_sum(chat, "kgpu_generation_running_sequences") == 0
        # The replica stopped generating for the client that left, well before its 240 tokens.
        assert _replica_sum(chat, "kgpu_generation_generated_tokens_total") - generated_before < 240


def _replica_sum(platform, name: str) -> float:
    """A metric summed over the chat replicas' /metrics."""
    total = 0.0
    for replica in _chat_replicas(platform):
        for line in httpx.get(f"{replica['url']}/metrics").text.splitlines():
            if line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def _stream_once(http: httpx.AsyncClient, index: int) -> tuple[int, int, bool, bool]:
    """(status, content events, finished with [DONE], ended with an error event)."""
    body = {"model": "chat", "prompt": f"Request {index}", "max_tokens": 30, "temperature": 0, "stream": True}
    events, done, failed = 0, False, False
    async with http.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, 0, False, False
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
            elif "error" in orjson.loads(line[6:]):
                failed = True
            else:
                events += 1
    return 200, events, done, failed


def test_killing_a_replica_under_streaming_load_loses_no_request_that_had_not_started(chat) -> None:
    victim = next(r for r in _chat_replicas(chat) if r["name"] == "chat-0")

    async def load() -> list[tuple[int, int, bool, bool]]:
        results: list[tuple[int, int, bool, bool]] = []
        stop_at = time.monotonic() + 6

        async def worker(worker_id: int, http: httpx.AsyncClient) -> None:
            index = 0
            while time.monotonic() < stop_at:
                results.append(await _stream_once(http, worker_id * 1000 + index))
                index += 1

        async with httpx.AsyncClient(base_url=chat.url, timeout=60) as http:
            workers = [asyncio.create_task(worker(i, http)) for i in range(8)]
            await asyncio.sleep(2)
            os.kill(victim["pid"], signal.SIGKILL)
            await asyncio.gather(*workers)
        return results

    results = asyncio.run(load())
    assert len(results) > 8
    assert all(status == 200 for status, *_ in results), results
    for _, events, done, failed in results:
        # Every request finished, except those cut mid-stream, which had started and say so in an error event.
        assert done or (failed and events >= 1)
    assert any(failed for *_, failed in results)  # the kill did cut streams that had started
    assert sum(done for *_, done, _ in results) > len(results) // 2
    _wait_ready(chat, 2, timeout=120)


def test_kgpu_top_shows_the_generation_columns_of_the_chat_service(chat) -> None:
    from typer.testing import CliRunner

    from kgpu.cli.main import app

    result = CliRunner().invoke(
        app, ["top", "--once", "--interval", "0.5", "--server", chat.url], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    # Other tests' services may share the prefix (default/chat-console): match the name as a whole word.
    lines = [ln for ln in result.output.splitlines() if re.search(r"default/chat(?![\w-])", ln)]
    assert len(lines) == 1, result.output
    line = lines[0]
    assert "0/0" in line and "%" in line  # running/waiting sequences and KV usage of an idle service
