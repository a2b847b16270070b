"""The same model behind LitServe with its dynamic batching on: the batching server to beat.

Batching is configured on the LitAPI (``max_batch_size``, ``batch_timeout``), which is where LitServe
0.2.x takes it (passing them to LitServer is deprecated there). One inference worker on the device,
one API server process, ZeroMQ between them (``fast_queue``). Requests and responses follow the OpenAI ``/v1/embeddings`` shape; a request
may carry one string or a list of strings, and a batch mixes both.

Run: python -m bench.common.litserve_server --model-dir DIR --port P [--device cpu|cuda] [--dtype ...]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import litserve as ls
import torch
from sentence_transformers import SentenceTransformer

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class EmbeddingAPI(ls.LitAPI):
    def __init__(self, model_dir: str, dtype: str, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(
            max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/v1/embeddings"
        )
        self.model_dir = model_dir
        self.dtype = dtype

    def setup(self, device: str) -> None:
        self.model = SentenceTransformer(self.model_dir, device=device)
        if self.dtype in DTYPES:
            self.model = self.model.to(DTYPES[self.dtype])

    def decode_request(self, request: dict) -> list[str]:
        texts = request["input"]
        return [texts] if isinstance(texts, str) else list(texts)

    def predict(self, batch: list[list[str]]) -> list:
        # One encode call for every sentence of every request in the batch, then split per request.
        flat = [text for texts in batch for text in texts]
        vectors = self.model.encode(flat, normalize_embeddings=True, convert_to_numpy=True)
        out, start = [], 0
        for texts in batch:
            out.append(vectors[start : start + len(texts)])
            start += len(texts)
        return out

    def encode_response(self, output) -> dict:
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector.tolist()}
                for i, vector in enumerate(output)
            ],
            "model": "minilm",
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["auto", *DTYPES])
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-timeout", type=float, default=0.005)
    parser.add_argument(
        "--slow-queue",
        action="store_true",
        help="use LitServe's default multiprocessing queue instead of ZeroMQ (fast_queue)",
    )
    args = parser.parse_args()
    api = EmbeddingAPI(args.model_dir, args.dtype, args.max_batch_size, args.batch_timeout)
    # fast_queue (ZeroMQ between API server and worker) is what LitServe recommends above ~100 requests/s:
    # the benchmark compares against LitServe at its best, not at its defaults.
    server = ls.LitServer(
        api,
        accelerator=args.device,
        devices=1,
        workers_per_device=1,
        timeout=120,
        fast_queue=not args.slow_queue,
    )
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
