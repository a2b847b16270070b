"""The weights-read bound on decoding throughput, for the GPU run of `bench/generation.py`.

A decode step reads every weight of the model once, so one device does at most
bandwidth / bytes of weights steps per second, and a step of `batch` sequences yields `batch`
tokens (`../shared/reference/serving-protocols.md`, "Latency terms"). The bound ignores the KV
cache reads and the prefill work, so a server's tokens/s can only approach it from below; how
close it gets at each concurrency is the figure to compare across GPUs. The bandwidth is measured
on the device (a large device-to-device copy), not taken from a data sheet, so the bound is the
one of the card the run had.
"""

from __future__ import annotations

from pathlib import Path

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def weights_read_bound_tokens_per_s(bandwidth_bytes_per_s: float, weight_bytes: int, batch: int) -> float:
    """Tokens per second if every decode step of `batch` sequences only read the weights once."""
    if bandwidth_bytes_per_s <= 0 or weight_bytes <= 0 or batch <= 0:
        raise ValueError("bandwidth, weight bytes and batch must be positive")
    return bandwidth_bytes_per_s / weight_bytes * batch


def weight_bytes(model_dir: Path, dtype: str) -> int:
    """Bytes of the model's parameters in `dtype` (tied embeddings once), counted without loading them."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPE_BYTES)}, not {dtype!r}")
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()) * _DTYPE_BYTES[dtype]


def measured_copy_bandwidth(device: str, size_bytes: int = 1 << 30, repeats: int = 5) -> float:
    """The device's memory bandwidth in bytes/s: best of `repeats` copies of `size_bytes` (read + write)."""
    import torch

    if not device.startswith("cuda"):
        raise ValueError("the weights-read bound is measured on a CUDA device")
    source = torch.empty(size_bytes, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        target.copy_(source)
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    return 2 * size_bytes / best
