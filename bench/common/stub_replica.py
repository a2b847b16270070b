"""A stub replica: answers `POST /v1/embeddings` at once with a fixed 384-float embedding.

Benchmarks of the gateway put it behind kgpu's gateway so that only HTTP and routing are measured.
"""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response


def stub_app() -> FastAPI:
    app = FastAPI()
    body = orjson.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": np.ones(384, np.float32)}],
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        await request.body()
        return Response(body, media_type="application/json")

    return app
