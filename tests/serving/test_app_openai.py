from __future__ import annotations

import asyncio

import httpx
import numpy as np
import openai
import pytest

from .conftest import SAMPLE_TEXTS
from .fakes import FakeEngine
from .helpers import SERVED, metric_samples, serving


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


async def test_official_client_gets_sentence_transformers_embeddings(engine, reference_embeddings) -> None:
    async with serving(engine) as (_, client):
        oai = openai.AsyncOpenAI(
            api_key="unused", base_url="http://replica/v1", http_client=client, max_retries=0
        )
        floats = await oai.embeddings.create(model=SERVED, input=SAMPLE_TEXTS, encoding_format="float")
        # Without encoding_format the client asks for base64 and decodes it itself.
        decoded = await oai.embeddings.create(model=SERVED, input=SAMPLE_TEXTS)
        explicit_b64 = await client.post(
            "/v1/embeddings", json={"model": SERVED, "input": SAMPLE_TEXTS[:1], "encoding_format": "base64"}
        )
        with pytest.raises(openai.NotFoundError, match="'other-model' does not exist") as not_found:
            await oai.embeddings.create(model="other-model", input="hi")
        assert not_found.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError, match="empty string"):
            await oai.embeddings.create(model=SERVED, input="")

    as_float = np.array([item.embedding for item in floats.data], dtype=np.float32)
    assert [item.index for item in floats.data] == list(range(len(SAMPLE_TEXTS)))
    assert as_float.shape == (len(SAMPLE_TEXTS), 384)
    assert _cosines(as_float, reference_embeddings).min() >= 0.999
    np.testing.assert_array_equal(
        np.array([item.embedding for item in decoded.data], dtype=np.float32), as_float
    )
    assert isinstance(explicit_b64.json()["data"][0]["embedding"], str)
    expected_tokens = sum(len(ids) for ids in engine.tokenize(SAMPLE_TEXTS))
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == expected_tokens
    assert floats.model == SERVED


async def test_token_id_inputs_and_dimensions(engine) -> None:
    ids = engine.tokenize(["token ids work too", "second"])
    async with serving(engine) as (_, client):
        by_text = await client.post("/v1/embeddings", json={"model": SERVED, "input": ["token ids work too"]})
        by_ids = await client.post("/v1/embeddings", json={"model": SERVED, "input": ids, "dimensions": 384})
        single = await client.post("/v1/embeddings", json={"model": SERVED, "input": ids[1]})
        models = await client.get("/v1/models")
    assert by_ids.status_code == 200, by_ids.text
    np.testing.assert_allclose(
        by_ids.json()["data"][0]["embedding"], by_text.json()["data"][0]["embedding"], atol=1e-5
    )
    assert by_ids.json()["usage"]["prompt_tokens"] == len(ids[0]) + len(ids[1])
    np.testing.assert_allclose(
        single.json()["data"][0]["embedding"], by_ids.json()["data"][1]["embedding"], atol=1e-5
    )
    assert [m["id"] for m in models.json()["data"]] == [SERVED]


BAD_INPUTS = [
    ({"model": SERVED, "input": ""}, 400, "input", "empty string"),
    ({"model": SERVED, "input": []}, 400, "input", "empty array"),
    ({"model": SERVED, "input": [""]}, 400, "input", "input[0] is an empty string"),
    ({"model": SERVED, "input": [[]]}, 400, "input", "input[0] is an empty token array"),
    ({"model": SERVED, "input": 5}, 400, "input", "got int"),
    ({"model": SERVED, "input": None}, 400, "input", "'input' is required"),
    ({"model": SERVED, "input": ["a", 1]}, 400, "input", "mixes item types (int, str)"),
    ({"model": SERVED, "input": [1, True]}, 400, "input", "mixes item types"),
    (
        {"model": SERVED, "input": [[1, "a"]]},
        400,
        "input",
        "input[0][1] must be an integer token id, got 'a'",
    ),
    ({"model": SERVED, "input": [101, 2.5]}, 400, "input", "input[1] must be an integer token id, got 2.5"),
    ({"model": SERVED, "input": [101, 3.0]}, 400, "input", "input[1] must be an integer token id, got 3.0"),
    # Beyond 64 bits the JSON parser yields a float; the message must not blame the type.
    (
        {"model": SERVED, "input": [101, 2**64]},
        400,
        "input",
        "input[1] is a number too large to be a token id",
    ),
    ({"model": SERVED, "input": [[101, -(2**70)]]}, 400, "input", "input[0][1] is a number too large"),
    ({"model": SERVED, "input": [[101, 30522]]}, 400, "input", "token id 30522 is outside"),
    ({"model": SERVED, "input": ["x"] * 2049}, 400, "input", "at most 2048 inputs"),
    (
        {"model": SERVED, "input": "a", "encoding_format": "bin"},
        400,
        "encoding_format",
        "'float' or 'base64'",
    ),
    # Falsy values of the wrong type were taken as "float" without a word.
    ({"model": SERVED, "input": "a", "encoding_format": 0}, 400, "encoding_format", "got 0"),
    ({"model": SERVED, "input": "a", "encoding_format": {}}, 400, "encoding_format", "got {}"),
    ({"model": SERVED, "input": "a", "dimensions": 128}, 400, "dimensions", "only produces 384"),
    ({"model": SERVED, "input": "a", "dimensions": "384"}, 400, "dimensions", "positive integer"),
    ({"input": "a"}, 400, "model", "'model' is required"),
    ({"model": "gpt-4", "input": "a"}, 404, "model", "'gpt-4' does not exist"),
    ([1, 2], 400, None, "must be a JSON object"),
]


async def test_bad_inputs_get_4xx_naming_the_cause(engine) -> None:
    async with serving(engine) as (_, client):
        for body, status, param, fragment in BAD_INPUTS:
            response = await client.post("/v1/embeddings", json=body)
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert fragment in error["message"], (fragment, error)
            assert error["param"] == param
            assert error["type"] == "invalid_request_error"
        invalid_json = await client.post(
            "/v1/embeddings", content=b'{"model": ', headers={"content-type": "application/json"}
        )
        assert invalid_json.status_code == 400 and "not valid JSON" in invalid_json.json()["error"]["message"]
        not_found = await client.post("/v1/embeddings", json={"model": "gpt-4", "input": "a"})
        assert not_found.json()["error"]["code"] == "model_not_found"
        failures = metric_samples((await client.get("/metrics")).text)
    assert failures["kgpu_request_failures_total"] >= len(BAD_INPUTS) + 2


async def test_bodies_over_the_limit_get_413_by_header_and_by_size() -> None:
    async with serving(FakeEngine(), max_body_bytes=1024) as (_, client):
        declared = await client.post("/v1/embeddings", json={"model": SERVED, "input": "word " * 500})

        async def chunks():
            for _ in range(10):
                yield b'"' + b"x" * 200 + b'",'

        streamed = await client.post("/v1/embeddings", content=chunks())  # chunked: no Content-Length
        v2 = await client.post(f"/v2/models/{SERVED}/infer", content=b"x" * 2000)
        small = await client.post("/v1/embeddings", json={"model": SERVED, "input": "short"})
    assert (
        declared.status_code == 413
        and "larger than the limit of 1024 bytes" in declared.json()["error"]["message"]
    )
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "request_too_large"
    assert v2.status_code == 413 and "1024 bytes" in v2.json()["error"]
    assert small.status_code == 200


async def test_validation_errors_use_the_openai_shape_and_name_the_field() -> None:
    async with serving(FakeEngine()) as (app, client):

        @app.get("/v1/probe")
        async def probe(limit: int) -> dict[str, int]:
            return {"limit": limit}

        response = await client.get("/v1/probe", params={"limit": "many"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"
    assert "'limit'" in response.json()["error"]["message"]


async def test_concurrent_requests_are_batched(engine) -> None:
    texts = [f"concurrent request number {i} about GPUs" for i in range(64)]
    async with serving(engine) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"model": SERVED, "input": text}) for text in texts)
        )
        metrics = metric_samples((await client.get("/metrics")).text)
    assert all(r.status_code == 200 for r in responses)
    assert metrics["kgpu_batch_size_sum"] == 64
    assert metrics["kgpu_batch_size_count"] < 64  # i.e. mean batch size > 1
    assert metrics["kgpu_inputs_total"] == 64
    assert metrics["kgpu_queue_duration_seconds_count"] == 64
    for name in (
        "kgpu_requests_total",
        "kgpu_request_duration_seconds_count",
        "kgpu_compute_duration_seconds_count",
        "kgpu_batch_tokens_count",
        "kgpu_queue_depth",
        "kgpu_tokens_total",
    ):
        assert name in metrics, name
    assert metrics["kgpu_requests_total"] == 64


async def test_full_queue_answers_429_with_retry_after() -> None:
    engine = FakeEngine()
    async with serving(engine, max_queue=1, max_batch_size=1) as (app, client):
        batcher = app.state.runtime.batcher
        engine.block()
        first = asyncio.create_task(client.post("/v1/embeddings", json={"model": SERVED, "input": "one"}))
        assert await asyncio.to_thread(engine.entered.wait, 5)
        second = asyncio.create_task(client.post("/v1/embeddings", json={"model": SERVED, "input": "two"}))
        while batcher.depth < 1:
            await asyncio.sleep(0.01)
        refused = await client.post("/v1/embeddings", json={"model": SERVED, "input": "three"})
        refused_v2 = await client.post(
            f"/v2/models/{SERVED}/infer",
            json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        )
        engine.release.set()
        accepted = await asyncio.gather(first, second)
        metrics = metric_samples((await client.get("/metrics")).text)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"
    assert "overloaded" in refused.json()["error"]["message"]
    assert refused_v2.status_code == 429 and "overloaded" in refused_v2.json()["error"]
    assert [r.status_code for r in accepted] == [200, 200]
    assert metrics["kgpu_request_failures_total"] == 2


async def test_readiness_follows_loading_and_draining(engine) -> None:
    import threading

    from kgpu.serving.app import create_app

    from .helpers import make_config

    gate = threading.Event()

    def slow_load(_config):
        gate.wait(10)
        return engine

    app = create_app(make_config(), engine_factory=slow_load)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica")
    try:
        assert (await client.get("/v2/health/live")).status_code == 200
        assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get(f"/v2/models/{SERVED}/ready")).status_code == 503
        loading = await client.post("/v1/embeddings", json={"model": SERVED, "input": "hi"})
        assert loading.status_code == 503 and "still loading" in loading.json()["error"]["message"]
        gate.set()
        await app.state.runtime.loaded.wait()
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.get(f"/v2/models/{SERVED}/ready")).status_code == 200
    finally:
        gate.set()
        await lifespan.__aexit__(None, None, None)
    after = await client.post("/v1/embeddings", json={"model": SERVED, "input": "hi"})
    assert (await client.get("/v2/health/ready")).status_code == 503
    assert after.status_code == 503
    await client.aclose()


async def test_shutdown_turns_readiness_off_first_then_finishes_in_flight_work() -> None:
    from kgpu.serving.app import create_app

    from .helpers import make_config, wait_ready

    engine = FakeEngine()
    app = create_app(make_config(), engine_factory=lambda _config: engine)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica")
    await wait_ready(client)
    engine.block()
    in_flight = asyncio.create_task(
        client.post("/v1/embeddings", json={"model": SERVED, "input": "in flight"})
    )
    assert await asyncio.to_thread(engine.entered.wait, 5)
    queued = asyncio.create_task(client.post("/v1/embeddings", json={"model": SERVED, "input": "queued one"}))
    while app.state.runtime.batcher.depth < 1:
        await asyncio.sleep(0.01)
    shutdown = asyncio.create_task(lifespan.__aexit__(None, None, None))
    await asyncio.sleep(0.05)
    assert (await client.get("/v2/health/ready")).status_code == 503
    assert not shutdown.done()  # still draining
    engine.release.set()
    await shutdown
    assert [(await in_flight).status_code, (await queued).status_code] == [200, 200]
    await client.aclose()


async def test_failed_load_keeps_the_replica_unready_with_the_reason() -> None:
    from kgpu.serving.app import create_app
    from kgpu.serving.model_source import ModelSourceError

    from .helpers import make_config

    def broken(_config):
        raise ModelSourceError("model uri 'hf://x/y' is a network location")

    app = create_app(make_config(), engine_factory=broken)
    async with app.router.lifespan_context(app):
        await app.state.runtime.loaded.wait()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://replica"
        ) as client:
            ready = await client.get("/v2/health/ready")
            response = await client.post("/v1/embeddings", json={"model": SERVED, "input": "hi"})
    assert ready.status_code == 503
    assert response.status_code == 503 and "failed to load" in response.json()["error"]["message"]
    assert "network location" in response.json()["error"]["message"]
