"""A stub replica: answers `POST /v1/embeddings` at once with a fixed 384-float embedding.

Benchmarks of the gateway put it behind kgpu's gateway so that only HTTP and routing are measured
(`bench.gateway` in process; `bench.command_overhead --server stub` as a command runtime of
`kgpu up`, run as `python -m bench.common.stub_replica --port N`).
"""

from __future__ import annotations

import argparse

import numpy as np
import orjson
import uvicorn
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(stub_app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
