"""`python -m kgpu.serving`: run one replica server (started by the local backend or a pod's command).

Shutdown on SIGTERM/SIGINT: readiness turns 503 at once, uvicorn stops accepting connections and waits up
to --graceful-timeout seconds for in-flight requests, then the lifespan drains the batcher and the process
exits 0. A model that fails to load makes the process exit 1, so its supervisor sees the failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from types import FrameType

from kgpu.http_limits import uvicorn_limits
from kgpu.serving.engine_threads import spin_briefly

spin_briefly()  # before anything imports torch, which loads libgomp

import uvicorn  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from kgpu import event_loop, flags  # noqa: E402
from kgpu.serving.app import ReplicaConfig, create_app  # noqa: E402
from kgpu.serving.runtime import ReplicaRuntime  # noqa: E402

log = logging.getLogger("kgpu.serving")

MEMORY_FRACTION_ENV = "KGPU_GPU_MEMORY_FRACTION"


# Flags whose config field has another name.
_FLAG_OF_FIELD = {"drain_timeout_s": "--graceful-timeout"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kgpu.serving", description="Serve one model (embeddings or text generation)."
    )
    parser.add_argument("--model-uri", required=True, help="pkg:<package>, file:///path or a local path")
    parser.add_argument("--served-name", required=True, help="model name clients send")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=flags.port, default=8000)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<index>")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--max-queue", type=int, default=1024)
    parser.add_argument("--max-inputs", type=int, default=2048)
    parser.add_argument(
        "--engine-workers", type=int, default=None, help="batches computed at once (default: by device)"
    )
    parser.add_argument(
        "--task", default="auto", choices=["auto", "embedding", "generation"], help="default: from the model"
    )
    parser.add_argument("--kv-cache-bytes", type=int, default=None, help="generation: KV cache size in bytes")
    parser.add_argument(
        "--prefill-chunk-tokens", type=int, default=None, help="generation: prompt tokens per step"
    )
    parser.add_argument("--replica", default="replica-0")
    parser.add_argument("--service", default="")
    parser.add_argument("--project", default="default")
    parser.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds for in-flight requests")
    flags.add_log_level(parser, flags.UVICORN_LEVELS)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ReplicaConfig:
    """The replica's settings; a value out of range exits naming its flag."""
    try:
        return _config(args)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            flag = _FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))
            lines.append(f"{flag}: {error['msg']} (got {error.get('input')!r})")
        raise SystemExit("invalid flags:\n" + "\n".join(lines)) from None


def _config(args: argparse.Namespace) -> ReplicaConfig:
    return ReplicaConfig(
        served_name=args.served_name,
        model_uri=args.model_uri,
        device=args.device,
        dtype=args.dtype,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        max_inputs=args.max_inputs,
        engine_workers=args.engine_workers,
        task=args.task,
        kv_cache_bytes=args.kv_cache_bytes,
        prefill_chunk_tokens=args.prefill_chunk_tokens,
        replica=args.replica,
        service=args.service,
        project=args.project,
        drain_timeout_s=args.graceful_timeout,
    )


def apply_gpu_memory_fraction() -> None:
    """Cap this process's share of a GPU that other replicas share (time-slicing / MPS)."""
    raw = os.environ.get(MEMORY_FRACTION_ENV)
    if not raw:
        return
    try:
        fraction = float(raw)
    except ValueError:
        raise SystemExit(f"{MEMORY_FRACTION_ENV}={raw!r} is not a number between 0 and 1") from None
    if not 0 < fraction <= 1:
        raise SystemExit(f"{MEMORY_FRACTION_ENV}={raw!r} must be in (0, 1]")
    import torch

    if not torch.cuda.is_available():
        log.info("%s=%s ignored: no CUDA device", MEMORY_FRACTION_ENV, raw)
        return
    torch.cuda.set_per_process_memory_fraction(fraction)
    log.info("GPU memory capped at %.0f%% of the device", fraction * 100)


class ReplicaServer(uvicorn.Server):
    """uvicorn server that turns readiness off the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, runtime: ReplicaRuntime) -> None:
        super().__init__(config)
        self.runtime = runtime

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.runtime.begin_drain()
        super().handle_exit(sig, frame)


async def serve(server: ReplicaServer) -> int:
    async def stop_if_load_fails() -> None:
        await server.runtime.loaded.wait()
        if server.runtime.load_error is not None:
            server.should_exit = True

    watcher = asyncio.create_task(stop_if_load_fails())
    try:
        await server.serve()
    finally:
        watcher.cancel()
    return 1 if server.runtime.load_error is not None else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from local paths only
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    config = config_from_args(args)
    apply_gpu_memory_fraction()
    app = create_app(config)
    uvicorn_config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=int(args.graceful_timeout),
        access_log=False,  # per-request lines would dominate the log at serving rates; /metrics has counts
        **uvicorn_limits(),
    )
    server = ReplicaServer(uvicorn_config, app.state.runtime)
    event_loop.after_uvicorn_stops(log)  # exit 0 after draining, not "killed by SIGTERM"
    log.info(
        "replica %s of %s listening on http://%s:%d", config.replica, config.service, args.host, args.port
    )
    return event_loop.run(serve(server))


if __name__ == "__main__":
    sys.exit(main())
