"""The baseline most people write first: FastAPI + sentence-transformers, one encode() per request.

The endpoint is a plain ``def``, so FastAPI runs each request in its threadpool and concurrent requests
call ``encode`` side by side with no batching across requests. It speaks the same OpenAI-style
``/v1/embeddings`` request and response as kgpu so one load generator drives both.

Run: python -m bench.common.naive_server --model-dir DIR --port P [--device cpu|cuda] [--dtype float32|...]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import uvicorn
from fastapi import Body, FastAPI, HTTPException
from sentence_transformers import SentenceTransformer

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_app(model_dir: str, device: str, dtype: str) -> FastAPI:
    model = SentenceTransformer(model_dir, device=device)
    if dtype in DTYPES:
        model = model.to(DTYPES[dtype])
    name = os.path.basename(os.path.dirname(model_dir.rstrip("/"))) or "model"
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embeddings(payload: dict = Body(...)) -> dict:
        texts = payload.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise HTTPException(status_code=400, detail="input must be a string or a list of strings")
        vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector.tolist()}
                for i, vector in enumerate(vectors)
            ],
            "model": payload.get("model", name),
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["auto", *DTYPES])
    args = parser.parse_args()
    app = build_app(args.model_dir, args.device, args.dtype)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
