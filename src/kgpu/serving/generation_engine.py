"""The generation engine: a causal language model behind transformers' continuous batching, streamed to asyncio.

transformers' `ContinuousBatchingManager` owns the loop that matters: a background thread that, at every step,
admits waiting requests into the running batch (iteration-level batching), drops finished ones at once, splits
long prompts into chunks of at most `prefill_chunk_tokens` so decodes keep running beside them (its FIFO
scheduler serves decoding requests first), and keeps keys and values in a paged cache of a fixed size. When the
cache is full, new prompts wait; if running sequences still outgrow it, the newest are preempted and recomputed
later (the library's soft reset), so a full cache queues work instead of running out of memory. A request that
could never fit the cache alone is refused up front (`context_length` includes that bound).

This module adds what a server needs around it: tokenization and chat templates, per-request sampling
(kgpu.serving.sampling), text streamed piece by piece with stop strings (kgpu.serving.text_stream), delivery of
each step's tokens to the request's asyncio task, cancellation when a client goes away, and the counts the
metrics and the autoscaler read (running and waiting sequences, KV cache usage).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kgpu.serving.devices import resolve_device, resolve_dtype
from kgpu.serving.sampling import SLOT_KWARG, RequestSampler, Sampling, install
from kgpu.serving.text_stream import IncrementalDetokenizer, StopMatcher

log = logging.getLogger(__name__)

# Defaults per device: CPUs get a small prefill chunk (a step stays short, so decodes beside a long prompt keep
# their pace) and a fixed KV budget (there is no device memory to measure); GPUs get the library's sizing.
_PREFILL_CHUNK = {"cpu": 256, "cuda": 2048}
_CPU_KV_CACHE_BYTES = 512 * 1024**2
# ...but no more than this many full-context sequences: a CPU steps through far fewer at a useful pace, and its
# memory is the machine's.
_CPU_KV_CACHE_SEQUENCES = 32
_GPU_KV_CACHE_FRACTION = 0.9
_PAGE_SIZE = {"cpu": 64, "cuda": 256}
_ATTENTION = ("auto", "sdpa", "varlen", "eager")  # auto: per-sequence on CPUs, the library's SDPA elsewhere


class GenerationError(RuntimeError):
    """The engine failed a request (its loop stopped or the request errored inside it)."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int
    sampling: Sampling | None = None  # None: greedy
    stop: tuple[str, ...] = ()


@dataclass
class Delta:
    """What one step added to an answer; the last one carries `finish_reason` ('stop' or 'length')."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Keys and values of one token over all layers."""
    text = config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * heads * head_dim * torch.finfo(dtype).bits // 8


class GenerationEngine:
    def __init__(
        self,
        model_dir: Path | str,
        device: str = "auto",
        dtype: str = "auto",
        kv_cache_bytes: int | None = None,
        prefill_chunk_tokens: int | None = None,
        max_running: int = 256,
        attention: str = "auto",
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        if attention not in _ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(_ATTENTION)}, not {attention!r}")
        self._dir = Path(model_dir)
        self._device = resolve_device(device)
        self._dtype = resolve_dtype(dtype, self._device)
        self.tokenizer = AutoTokenizer.from_pretrained(self._dir, local_files_only=True)
        # On GPUs the library's SDPA, which switches to a flash varlen kernel where one is installed. CPUs have no
        # such kernel, and the library's SDPA there computes every query of a step against every key under a
        # mask: per-sequence attention (kgpu.serving.varlen_attention) did the same fixed work with 14-22 % less
        # CPU time in every pairing, and 1.13-1.30x the tokens/s in four of six (bench/generation_engine_ab.py,
        # bench/results/2026-12-05-generation-engine-step-cpu.md), so it is the default there. `eager` is the
        # library's `paged|eager`.
        if attention == "auto":
            attention = "varlen" if self._device.type == "cpu" else "sdpa"
        varlen = attention == "varlen"
        library_attention = "eager" if attention == "eager" else "sdpa"
        self.model = AutoModelForCausalLM.from_pretrained(
            self._dir, dtype=self._dtype, local_files_only=True, attn_implementation=library_attention
        ).to(self._device)
        self.model.eval()
        config = self.model.config
        kind = self._device.type
        self.prefill_chunk_tokens = prefill_chunk_tokens or _PREFILL_CHUNK.get(kind, 2048)
        page_size = _PAGE_SIZE.get(kind, 256)
        self.eos_token_ids = _eos_ids(self.model.generation_config.eos_token_id, config.eos_token_id)
        self.max_positions = int(getattr(config.get_text_config(), "max_position_embeddings", 0) or 2048)
        per_token = kv_bytes_per_token(config, self._dtype)
        if kv_cache_bytes is None and kind == "cpu":
            kv_cache_bytes = min(
                _CPU_KV_CACHE_BYTES, _CPU_KV_CACHE_SEQUENCES * self.max_positions * per_token
            )
        cb_config = ContinuousBatchingConfig(
            page_size=page_size,
            max_batch_tokens=self.prefill_chunk_tokens,
            max_requests_per_batch=max_running,
            scheduler_type="fifo",
            # The per-request sampler (kgpu.serving.sampling) reads each row's sampling slot on the host,
            # which a captured CUDA graph cannot do: steps run eagerly (as they do on CPU anyway).
            use_cuda_graph=False,
        )
        if kv_cache_bytes is not None:
            cb_config.num_blocks = max(1, kv_cache_bytes // (per_token * page_size))
        else:
            cb_config.max_memory_percent = _GPU_KV_CACHE_FRACTION
        generation_config = GenerationConfig(
            do_sample=False, eos_token_id=self.eos_token_ids or -1, pad_token_id=config.pad_token_id
        )
        self.sampler = RequestSampler()
        self._manager = self.model.init_continuous_batching(
            generation_config=generation_config, continuous_batching_config=cb_config
        )
        install(self._manager.logit_processor, self.sampler)
        if varlen:  # after the library's set-up, which accepts only its own implementations
            from kgpu.serving.varlen_attention import (
                register as register_varlen_attention,
            )  # an option: load on use

            self.model.set_attn_implementation(register_varlen_attention())
        self._planned_kv_blocks = cb_config.num_blocks
        self._page_size = page_size

    # -- facts -----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._dir.name

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def dtype(self) -> str:
        return str(self._dtype).removeprefix("torch.")

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens the paged cache holds (all sequences together)."""
        cache = self._cache()
        if cache is not None:
            return int(cache.num_blocks) * self._page_size
        return int(self._planned_kv_blocks or 0) * self._page_size

    @property
    def context_length(self) -> int:
        """Longest prompt plus answer one request may have: the model's positions, and what the cache can hold."""
        kv = self.kv_cache_tokens
        return min(self.max_positions, kv) if kv else self.max_positions

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        # The loop thread takes the caller's inference mode: no autograd bookkeeping on any step.
        with torch.inference_mode():
            self._manager.start()
        deadline = time.monotonic() + 60
        while self._cache() is None and self._manager.is_running() and time.monotonic() < deadline:
            time.sleep(0.005)  # the loop thread creates the cache; its size is a fact clients are told
        if not self._manager.is_running():
            raise GenerationError("the generation loop stopped while starting")

    def warmup(self) -> float:
        """One short answer through the running loop, so the first client does not pay for lazy set-up.

        It runs on the loop's own thread, like every later step: on CPUs, GNU OpenMP gives each thread that
        computes its own team of helpers, and helpers past the core count sleep and wake at every operation
        (kgpu.serving.engine_threads), which made steps several times slower when the model had also been
        run from another thread."""
        started = time.perf_counter()
        request_id = self._manager.add_request(self.tokenize("warm up"), max_new_tokens=2, streaming=False)
        if request_id is None or self._manager.get_result(request_id, timeout=300) is None:
            raise GenerationError("the generation loop did not answer its warm-up request")
        return time.perf_counter() - started

    def stop(self, timeout: float | None = 10.0) -> None:
        if self._manager.is_running():
            self._manager.stop(block=True, timeout=timeout)

    @property
    def running(self) -> bool:
        return self._manager.is_running()

    # -- load ------------------------------------------------------------------------------------------
    def _cache(self) -> Any:
        processor = self._manager.batch_processor
        return processor.cache if processor is not None else None

    def running_sequences(self) -> int:
        processor = self._manager.batch_processor
        return len(processor.scheduler.active_requests) if processor is not None else 0

    def waiting_sequences(self) -> int:
        processor = self._manager.batch_processor
        waiting = len(processor.scheduler.waiting_requests) if processor is not None else 0
        return waiting + self._manager.input_queue.qsize()

    def kv_cache_usage(self) -> float:
        cache = self._cache()
        return 0.0 if cache is None else max(0.0, 1.0 - float(cache.compute_free_capacity()))

    # -- text ------------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenize(rendered)

    # -- generation ------------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """The answer, piece by piece; closing the iterator early cancels the request in the engine."""
        manager = self._manager
        request_id = uuid.uuid4().hex
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        slot = self.sampler.register(request.sampling)
        detokenizer = IncrementalDetokenizer(self.tokenizer)
        stops = StopMatcher(request.stop)
        finished = False  # this iterator has given its last piece
        engine_done = False  # the engine has nothing more for this request (finished or failed)
        seen = 0
        manager.register_result_handler(request_id, outputs.put_nowait)
        try:
            kwargs = {SLOT_KWARG: slot} if request.sampling is not None else {}
            accepted = manager.add_request(
                request.prompt_ids,
                request_id=request_id,
                max_new_tokens=request.max_tokens,
                streaming=True,
                eos_token_id=self.eos_token_ids or -1,
                **kwargs,
            )
            if accepted is None:
                raise GenerationError("the generation loop is not accepting requests")
            while not finished:
                output = await outputs.get()
                if output.error is not None:
                    engine_done = True
                    raise GenerationError(output.error)
                tokens = output.generated_tokens
                new = list(tokens[seen:])
                seen = len(tokens)
                done = engine_done = output.is_finished()
                text = stops.feed(detokenizer.push(new, final=done))
                if stops.stopped:
                    finished = True
                    yield Delta(text, new, "stop")
                    return
                if done:
                    finished = True
                    text += stops.flush()
                    last = tokens[-1] if tokens else None
                    yield Delta(text, new, "stop" if last in self.eos_token_ids else "length")
                    return
                if text or new:
                    yield Delta(text, new)
        finally:
            if not engine_done:
                manager.cancel_request(request_id)
            with manager.output_router._lock:  # the library drops a handler only when its request finishes
                manager.output_router.result_handlers.pop(request_id, None)
            self.sampler.release(slot)


def _eos_ids(*declared: Any) -> list[int]:
    ids: list[int] = []
    for value in declared:
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(token, int) and token >= 0 and token not in ids:
                ids.append(token)
    return ids
