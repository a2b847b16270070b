"""Settings of one replica server (what `python -m kgpu.serving` flags and the backends fill in)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ReplicaConfig(BaseModel):
    # "model_uri" would otherwise collide with pydantic's reserved "model_" prefix.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    served_name: str = Field(min_length=1)
    model_uri: str = Field(min_length=1)
    device: str = "auto"  # auto | cpu | cuda | cuda:<index>
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_batch_tokens: int = Field(16384, ge=1)
    max_batch_size: int = Field(256, ge=1)
    max_queue: int = Field(1024, ge=1, description="requests waiting for the engine before 429")
    max_inputs: int = Field(2048, ge=1, description="inputs per request (OpenAI's limit is 2048)")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1)
    replica: str = "replica-0"
    service: str = ""  # defaults to served_name
    project: str = "default"
    drain_timeout_s: float = Field(30.0, ge=0, description="how long shutdown waits for queued work")
    tokenizer_threads: int | None = Field(None, ge=1, description="default: min(8, CPU cores)")
    task: Literal["auto", "embedding", "generation"] = Field(
        "auto", description="auto: generation for a causal language model directory, embeddings otherwise"
    )
    kv_cache_bytes: int | None = Field(
        None, ge=1, description="generation: KV cache size; default 512 MiB on CPU, 90% of free GPU memory"
    )
    prefill_chunk_tokens: int | None = Field(
        None, ge=16, description="generation: most prompt tokens per step; default 256 on CPU, 2048 on GPU"
    )
    engine_workers: int | None = Field(
        None, ge=1, description="batches computed at once; default: min(4, CPU cores) on CPU, 1 on GPU"
    )

    @model_validator(mode="after")
    def _default_service(self) -> ReplicaConfig:
        if not self.service:
            self.service = self.served_name
        return self
