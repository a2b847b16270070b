from __future__ import annotations

import numpy as np

from .helpers import SERVED, serving


def _infer_body(texts, shape=None, datatype="BYTES", **extra):
    tensor = {"name": "text", "shape": shape or [len(texts)], "datatype": datatype, "data": texts}
    return {"inputs": [tensor], **extra}


async def test_infer_returns_fp32_embeddings_matching_the_openai_route(engine) -> None:
    texts = ["open inference protocol", "second text"]
    async with serving(engine) as (_, client):
        v2 = await client.post(f"/v2/models/{SERVED}/infer", json=_infer_body(texts, id="req-7"))
        nested = await client.post(
            f"/v2/models/{SERVED}/infer", json=_infer_body([[t] for t in texts], [2, 1])
        )
        openai_style = await client.post("/v1/embeddings", json={"model": SERVED, "input": texts})
    assert v2.status_code == 200, v2.text
    body = v2.json()
    assert body["model_name"] == SERVED and body["id"] == "req-7"
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("embedding", "FP32", [2, 384])
    vectors = np.array(output["data"], dtype=np.float32).reshape(2, 384)
    expected = np.array([d["embedding"] for d in openai_style.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert nested.json()["outputs"][0]["data"] == output["data"]


async def test_metadata_and_health(engine) -> None:
    async with serving(engine) as (_, client):
        server = await client.get("/v2")
        model = await client.get(f"/v2/models/{SERVED}")
        ready = await client.get(f"/v2/models/{SERVED}/ready")
        unknown = await client.get("/v2/models/other")
        unknown_ready = await client.get("/v2/models/other/ready")
    assert server.json()["name"] == "kgpu"
    meta = model.json()
    assert (meta["name"], meta["platform"], meta["versions"]) == (SERVED, "pytorch", ["1"])
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    assert ready.status_code == 200
    assert unknown.status_code == 404 and "'other' is not served here" in unknown.json()["error"]
    assert unknown_ready.status_code == 404


async def test_bad_infer_requests_get_400_or_404_with_a_reason(engine) -> None:
    cases = [
        (_infer_body(["a"], datatype="FP32"), "datatype must be BYTES"),
        (_infer_body(["a", "b"], shape=[3]), "holds 3 elements but data has 2"),
        (_infer_body([]), "is empty"),
        (_infer_body(["ok", ""]), "element 1 must be a non-empty string"),
        (_infer_body(["ok", 3]), "element 1 must be a non-empty string"),
        (_infer_body(["a"], shape=["1"]), "shape must be a list of non-negative integers"),
        (_infer_body(["a"], outputs=[{"name": "logits"}]), "unknown output(s) ['logits']"),
        (_infer_body([["a"]], shape=[1]), "nested deeper than its shape [1] has dimensions"),
        # A product of 5,400 digits: str() of it raised ValueError, a 500.
        (_infer_body(["a"], shape=[10**18] * 300), "holds more than 2048 elements"),
        ({"inputs": []}, "exactly one tensor"),
        ({"model": "x"}, "exactly one tensor"),
        (["not", "an", "object"], "must be a JSON object"),
    ]
    async with serving(engine) as (_, client):
        for body, fragment in cases:
            response = await client.post(f"/v2/models/{SERVED}/infer", json=body)
            assert response.status_code == 400, (body, response.text)
            assert fragment in response.json()["error"], (fragment, response.json())
        # Nested past Python's recursion limit (JSON allows ~1000 levels): once a 500 (RecursionError).
        deep = '{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": %s}]}' % (
            "[" * 990 + '"a"' + "]" * 990
        )
        too_deep = await client.post(f"/v2/models/{SERVED}/infer", content=deep.encode())
        too_many = await client.post(f"/v2/models/{SERVED}/infer", json=_infer_body(["x"] * 2049))
        invalid_json = await client.post(f"/v2/models/{SERVED}/infer", content=b"{nope")
        wrong_model = await client.post("/v2/models/other/infer", json=_infer_body(["a"]))
        missing_route = await client.get("/v2/nothing-here")
    assert too_deep.status_code == 400 and "nested deeper than its shape" in too_deep.json()["error"]
    assert too_many.status_code == 400 and "at most 2048" in too_many.json()["error"]
    assert invalid_json.status_code == 400 and "not valid JSON" in invalid_json.json()["error"]
    assert wrong_model.status_code == 404 and "'other'" in wrong_model.json()["error"]
    assert missing_route.status_code == 404 and isinstance(missing_route.json()["error"], str)
