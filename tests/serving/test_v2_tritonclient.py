"""The official Triton HTTP client (`tritonclient[http]`, its defaults: binary tensor data on) against
kgpu's gateway in front of a real replica: health, model readiness and metadata, and `infer` with binary
and JSON inputs and outputs, BYTES texts in, FP32 embeddings out."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from fastapi import FastAPI
from tritonclient.utils import InferenceServerException

from kgpu.gateway.app import gateway_routes
from kgpu.gateway.metrics import GatewayMetrics
from kgpu.gateway.registry import ReplicaRegistry
from kgpu.gateway.router import Router
from kgpu.serving.app import create_app
from tests.live_server import serving
from tests.serving.helpers import make_config

SERVICE = "default/minilm"
TEXTS = ["hello", "Émile a mangé des crêpes à Paris; 東京で寿司を食べた。", "GPU inference " * 20]


@pytest.fixture(scope="module")
def gateway_url(engine):
    replica = create_app(make_config(), engine_factory=lambda _config: engine)
    with serving(replica) as replica_url:
        router = Router(ReplicaRegistry(), GatewayMetrics())
        router.registry.add(SERVICE, "minilm-0", replica_url)
        app = FastAPI()
        app.include_router(
            gateway_routes(router, lambda m: SERVICE if m == "minilm" else None, lambda: ["minilm"])
        )
        with serving(app) as url:
            deadline = time.monotonic() + 30
            while httpx.get(f"{replica_url}/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline, "the replica never became ready"
                time.sleep(0.05)
            yield url


@pytest.fixture
def client(gateway_url):
    client = triton.InferenceServerClient(url=gateway_url.removeprefix("http://"))
    yield client
    client.close()


def texts_input(binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_), binary_data=binary)
    return tensor


def reference(gateway_url) -> np.ndarray:
    """The same texts through the gateway's OpenAI route."""
    body = httpx.post(f"{gateway_url}/v1/embeddings", json={"model": "minilm", "input": TEXTS}).json()
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)


def test_health_readiness_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("minilm")
    assert client.is_model_ready("minilm", model_version="1")
    assert not client.is_model_ready("nope")
    metadata = client.get_model_metadata("minilm")
    assert metadata["name"] == "minilm" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("minilm", model_version="7")


@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_infer_with_binary_and_json_tensors(client, gateway_url, binary_in, binary_out):
    outputs = [triton.InferRequestedOutput("embedding", binary_data=binary_out)]
    result = client.infer("minilm", [texts_input(binary_in)], outputs=outputs)
    embeddings = result.as_numpy("embedding")
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(embeddings, reference(gateway_url), atol=1e-6)
    output = result.get_output("embedding")
    assert ("binary_data_size" in output.get("parameters", {})) == binary_out


def test_infer_with_the_clients_defaults_and_a_version(client, gateway_url):
    # No outputs named: the client asks for every output in binary (binary_data_output).
    result = client.infer("minilm", [texts_input(True)], model_version="1", request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    np.testing.assert_allclose(result.as_numpy("embedding"), reference(gateway_url), atol=1e-6)


def test_bad_binary_bodies_are_4xx_naming_the_cause(gateway_url):
    header = (
        b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":9}}]}'
    )
    response = httpx.post(
        f"{gateway_url}/v2/models/minilm/infer",
        content=header + b"\x05\x00\x00\x00abc",
        headers={"inference-header-content-length": str(len(header))},
    )
    assert response.status_code == 400 and "binary_data_size" in response.text
    response = httpx.post(
        f"{gateway_url}/v2/models/minilm/infer",
        content=header,
        headers={"inference-header-content-length": "99999"},
    )
    assert response.status_code == 400 and "Inference-Header-Content-Length" in response.text
