"""The live state of a generation replica: loading, readiness, draining, and answers with their metrics.

Like the embedding runtime (kgpu.serving.runtime), the model loads in the background so liveness answers at once,
and readiness turns on only when the engine's loop runs. Draining turns readiness off, then waits for the answers
in progress (up to the drain timeout) before the loop stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from kgpu.gc_tuning import freeze_what_is_loaded
from kgpu.serving.config import ReplicaConfig
from kgpu.serving.errors import ApiError
from kgpu.serving.generation_engine import Delta, GenerationEngine, GenerationError, GenerationRequest
from kgpu.serving.generation_metrics import GenerationMetrics
from kgpu.serving.metrics import ReplicaMetrics
from kgpu.serving.model_source import describe_model_source, resolve_model_uri
from kgpu.serving.model_task import served_task
from kgpu.serving.runtime import readiness_error

log = logging.getLogger("kgpu.serving")

GenerationEngineFactory = Callable[[ReplicaConfig], Any]


def build_generation_engine(config: ReplicaConfig) -> GenerationEngine:
    return GenerationEngine(
        resolve_model_uri(config.model_uri),
        device=config.device,
        dtype=config.dtype,
        kv_cache_bytes=config.kv_cache_bytes,
        prefill_chunk_tokens=config.prefill_chunk_tokens,
        max_running=config.max_batch_size,
    )


def replica_task(config: ReplicaConfig) -> str:
    """The task a replica serves: as configured, else read from its model directory (kgpu.serving.model_task)."""
    return served_task(config.task, config.model_uri)


class GenerationRuntime:
    def __init__(self, config: ReplicaConfig, engine_factory: GenerationEngineFactory | None = None) -> None:
        self.config = config
        self.metrics = ReplicaMetrics(config.service, config.replica)
        self.generation_metrics = GenerationMetrics(self.metrics)
        self.engine: Any = None
        self.load_error: str | None = None
        self.draining = False
        self.loaded = asyncio.Event()
        self._engine_factory = engine_factory or build_generation_engine
        self._load_task: asyncio.Task[None] | None = None
        self._answers = 0  # answers in progress on this replica

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.running and not self.draining

    def start_loading(self) -> None:
        self._load_task = asyncio.create_task(self._load(), name="kgpu-load-model")

    async def _load(self) -> None:
        config = self.config
        try:
            log.info("loading model %s from %s for generation", config.served_name, config.model_uri)
            log.info("model source %s", await asyncio.to_thread(describe_model_source, config.model_uri))
            started = time.perf_counter()
            engine = await asyncio.to_thread(self._engine_factory, config)
            log.info("loaded %s in %.1fs", config.served_name, time.perf_counter() - started)
            await asyncio.to_thread(engine.start)
            log.info("warmed up in %.2fs", await asyncio.to_thread(engine.warmup))
            self.generation_metrics.track_engine(
                engine.running_sequences, engine.waiting_sequences, engine.kv_cache_usage
            )
            freeze_what_is_loaded()
            self.engine = engine
            log.info(
                "ready in %.1fs: serving %s (device=%s, dtype=%s, context %d tokens, KV cache %d tokens) "
                "on /v1/chat/completions, /v1/completions and /v2/models/%s/generate",
                time.perf_counter() - started,
                config.served_name,
                engine.device,
                engine.dtype,
                engine.context_length,
                engine.kv_cache_tokens,
                config.served_name,
            )
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.load_error)
        finally:
            self.loaded.set()

    def begin_drain(self) -> None:
        if not self.draining:
            log.info("draining: readiness off, finishing answers in progress")
        self.draining = True

    async def shutdown(self) -> None:
        self.begin_drain()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        deadline = time.monotonic() + self.config.drain_timeout_s
        while self._answers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.engine is not None:
            await asyncio.to_thread(self.engine.stop)
        log.info("stopped")

    def require_ready(self) -> None:
        stopping = self.engine is not None and not self.engine.running
        error = readiness_error(self.load_error, loaded=self.engine is not None, stopping=stopping)
        if error is not None:
            raise error

    def require_capacity(self) -> None:
        """429 once more requests wait for the running batch than the replica queues."""
        waiting = self.engine.waiting_sequences()
        if waiting >= self.config.max_queue:
            raise ApiError(
                429,
                f"model is overloaded: {waiting} requests are waiting for the running batch; retry later",
                code="queue_full",
                reason="queue_full",
                headers={"Retry-After": "1"},
            )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """The engine's answer with its metrics; errors inside the engine end it with GenerationError."""
        self.require_ready()
        self.require_capacity()
        metrics = self.generation_metrics
        last = time.perf_counter()
        generated = 0
        self._answers += 1
        try:
            async for delta in self.engine.generate(request):
                if delta.token_ids:
                    now = time.perf_counter()
                    metrics.observe_piece(last, now, first=generated == 0)
                    last = now
                    generated += len(delta.token_ids)
                yield delta
        except GenerationError:
            self.metrics.count_failure("engine")
            raise
        finally:
            self._answers -= 1
            metrics.count_tokens(len(request.prompt_ids), generated)
