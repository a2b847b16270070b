"""The live state of one replica: loading, readiness, draining, and the path from inputs to embeddings.

Loading runs as a background task so the HTTP server answers liveness probes from the first second; the
replica reports ready only once the model is loaded, warmed up and the batcher runs. Draining flips
readiness off first (so routers stop sending), then lets the batcher finish what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from kgpu.gc_tuning import freeze_what_is_loaded
from kgpu.serving.batcher import BatcherClosedError, DynamicBatcher, QueueFullError
from kgpu.serving.config import ReplicaConfig
from kgpu.serving.cpus import cpu_threads
from kgpu.serving.engine import EmbeddingEngine, InvalidInputError
from kgpu.serving.engine_threads import EngineThreads
from kgpu.serving.errors import ApiError
from kgpu.serving.metrics import ReplicaMetrics
from kgpu.serving.model_source import describe_model_source, resolve_model_uri

log = logging.getLogger("kgpu.serving")

EngineFactory = Callable[[ReplicaConfig], Any]


def build_engine(config: ReplicaConfig) -> EmbeddingEngine:
    return EmbeddingEngine(resolve_model_uri(config.model_uri), device=config.device, dtype=config.dtype)


class ReplicaRuntime:
    def __init__(self, config: ReplicaConfig, engine_factory: EngineFactory | None = None) -> None:
        self.config = config
        self.metrics = ReplicaMetrics(config.service, config.replica)
        self.engine: Any = None
        self.batcher: DynamicBatcher | None = None
        self.load_error: str | None = None
        self.draining = False
        self.loaded = asyncio.Event()  # set when loading finished, successfully or not
        self._engine_factory = engine_factory or build_engine
        self._load_task: asyncio.Task[None] | None = None
        # Tokenization happens off the event loop: the Rust tokenizer releases the GIL, so these threads
        # tokenize in parallel with each other and with the engine workers.
        self._tokenize_pool = ThreadPoolExecutor(
            max_workers=config.tokenizer_threads or min(8, cpu_threads()), thread_name_prefix="kgpu-tokenize"
        )

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.batcher is not None and self.batcher.running and not self.draining

    def start_loading(self) -> None:
        self._load_task = asyncio.create_task(self._load(), name="kgpu-load-model")

    async def _load(self) -> None:
        config = self.config
        # Loaded and warmed up on the thread that computes alone later: see engine_threads.
        threads = EngineThreads()
        try:
            log.info(
                "loading model %s from %s (device=%s, dtype=%s)",
                config.served_name,
                config.model_uri,
                config.device,
                config.dtype,
            )
            log.info("model source %s", await threads.run(describe_model_source, config.model_uri))
            started = time.perf_counter()
            engine = await threads.run(self._engine_factory, config)
            log.info(
                "loaded %s in %.1fs: dim=%d, max_seq_len=%d, device=%s, dtype=%s",
                engine.name,
                time.perf_counter() - started,
                engine.dim,
                engine.max_seq_len,
                engine.device,
                engine.dtype,
            )
            warmup = getattr(engine, "warmup", None)
            if warmup is not None:
                log.info("warmed up in %.2fs", await threads.run(warmup))
            workers = config.engine_workers or engine.default_workers()
            batcher = DynamicBatcher(
                engine,
                max_batch_tokens=config.max_batch_tokens,
                max_batch_size=config.max_batch_size,
                max_queue=config.max_queue,
                on_batch=self.metrics.observe_batch,
                workers=workers,
                threads=threads,
            )
            await batcher.start()
            log.info("%d engine worker(s)", workers)
            self.metrics.track_queue_depth(lambda: batcher.depth)
            # The model and everything imported for it live as long as the replica; frozen before
            # the replica reports ready, so no request waits for the collection that precedes it.
            freeze_what_is_loaded()
            self.engine, self.batcher = engine, batcher
            log.info(
                "ready: serving %s on /v1/embeddings and /v2/models/%s/infer",
                config.served_name,
                config.served_name,
            )
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.load_error)
            threads.shutdown()
        finally:
            self.loaded.set()

    def begin_drain(self) -> None:
        """Stop reporting ready; requests already accepted still complete."""
        if not self.draining:
            log.info("draining: readiness off, finishing in-flight requests")
        self.draining = True

    async def shutdown(self) -> None:
        self.begin_drain()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self.batcher is not None:
            await self.batcher.stop(timeout=self.config.drain_timeout_s)
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")

    # -- serving ---------------------------------------------------------------------------------------
    def require_ready(self) -> None:
        error = readiness_error(
            self.load_error,
            loaded=self.batcher is not None,
            stopping=self.batcher is not None and not self.batcher.running,
        )
        if error is not None:
            raise error

    async def tokenize(self, texts: list[str]) -> list[list[int]]:
        self.require_ready()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenize_pool, self.engine.tokenize, texts)

    async def prepare_ids(self, ids: list[list[int]], param: str) -> list[list[int]]:
        self.require_ready()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._tokenize_pool, self.engine.prepare_ids, ids)
        except InvalidInputError as exc:
            raise ApiError(400, str(exc), param=param, code="invalid_value") from exc

    async def embed(self, ids: list[list[int]]) -> np.ndarray:
        self.require_ready()
        assert self.batcher is not None
        with _batcher_errors():
            vectors = await self.batcher.submit(ids)
        self.metrics.count_work(len(ids), sum(len(sequence) for sequence in ids))
        return vectors

    async def embed_texts(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids and embeddings of texts; a request alone is tokenized by the engine worker itself."""
        self.require_ready()
        assert self.batcher is not None
        engine = self.engine
        with _batcher_errors():
            alone = await self.batcher.prepare_and_embed(
                lambda: engine.tokenize(texts), len(texts), engine.max_seq_len
            )
        if alone is None:
            ids = await self.tokenize(texts)
            return ids, await self.embed(ids)
        ids, vectors = alone
        self.metrics.count_work(len(ids), sum(len(sequence) for sequence in ids))
        return ids, vectors


def readiness_error(load_error: str | None, *, loaded: bool, stopping: bool) -> ApiError | None:
    """The 503 a replica answers while it cannot serve (any runtime), or None when it can."""
    if load_error is not None:
        return ApiError(
            503, f"model failed to load: {load_error}", code="model_not_ready", reason="not_ready"
        )
    if stopping:
        return ApiError(
            503,
            "replica is shutting down; retry on another replica",
            code="model_not_ready",
            reason="not_ready",
            headers={"Retry-After": "1"},
        )
    if not loaded:
        return ApiError(
            503,
            "model is still loading; retry shortly",
            code="model_not_ready",
            reason="not_ready",
            headers={"Retry-After": "2"},
        )
    return None


@contextlib.contextmanager
def _batcher_errors() -> Iterator[None]:
    """The batcher's refusals as the HTTP answers clients act on."""
    try:
        yield
    except QueueFullError as exc:
        raise ApiError(
            429,
            f"model is overloaded: {exc}; retry later",
            code="queue_full",
            reason="queue_full",
            headers={"Retry-After": "1"},
        ) from exc
    except BatcherClosedError as exc:
        raise ApiError(
            503,
            f"{exc}; retry on another replica",
            code="model_not_ready",
            reason="not_ready",
            headers={"Retry-After": "1"},
        ) from exc
