"""The generation baseline most people write first: FastAPI calling `model.generate` per request, one at a time.

Requests are served in arrival order by a single worker thread (no batching across requests); each answer
streams its tokens as server-sent events as `generate` produces them (a streamer), in the OpenAI completions
shape, so the benchmark's load generator reads it like the other servers. Greedy decoding only.

Run: python -m bench.common.naive_generation_server --model-dir DIR --port P [--device cpu|cuda] [--dtype ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import StreamingResponse
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class QueueStreamer(BaseStreamer):
    """Hands each generated token to the event loop (the prompt, sent first, is skipped)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self.loop, self.queue, self.prompt = loop, queue, True

    def put(self, value: torch.Tensor) -> None:
        if self.prompt:
            self.prompt = False
            return
        self.loop.call_soon_threadsafe(self.queue.put_nowait, value.reshape(-1).tolist())

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


def build_app(model_dir: str, device: str, dtype: str) -> FastAPI:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch_dtype = DTYPES.get(dtype, torch.bfloat16 if device == "cuda" else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
    one_at_a_time = ThreadPoolExecutor(max_workers=1)
    app = FastAPI()

    def generate(ids: list[int], max_tokens: int, streamer: QueueStreamer) -> None:
        with torch.no_grad():
            model.generate(
                torch.tensor([ids], device=device), max_new_tokens=max_tokens, do_sample=False,
                streamer=streamer, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip

    @app.post("/v1/completions")
    async def completions(payload: dict = Body(...)) -> StreamingResponse:
        ids = tokenizer(payload["prompt"], add_special_tokens=False)["input_ids"]
        max_tokens = int(payload.get("max_tokens") or 16)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = loop.run_in_executor(one_at_a_time, generate, ids, max_tokens, QueueStreamer(loop, queue))

        async def events():
            generated = 0
            while (tokens := await queue.get()) is not None:
                generated += len(tokens)
                text = tokenizer.decode(tokens)
                yield (
                    "data: "
                    + json.dumps({"choices": [{"index": 0, "text": text, "finish_reason": None}]})
                    + "\n\n"
                )
            await done
            usage = {"prompt_tokens": len(ids), "completion_tokens": generated}
            yield "data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.model_dir, args.device, args.dtype),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
