"""Attention for transformers' continuous batching where no varlen kernel exists (CPUs): each sequence against
its own keys only. The generation engine's default on CPUs (`attention="auto"`; `attention="sdpa"` asks for the
library's): on fixed work at concurrency 32 it took 14-22 % less CPU time than the library's masked SDPA in
every pairing, and gave 1.13-1.30x its tokens/s in four of six (0.97x and 1.07x in two run while other work
raised the machine's load; bench/results/2026-12-05-generation-engine-step-cpu.md).

Why: with `sdpa` or `paged|eager`, the library computes one attention per step over every query and every key
of the step, made block-diagonal by a mask (`[1, 1, query tokens, keys read]`). On a GPU a flash varlen kernel
skips the masked blocks; on a CPU nothing does, so a step's attention grows with the product of the batch's
queries and its keys: 32 decodes beside a 256-token prefill chunk compute 288 queries against every key of
all 33 sequences, and the mask itself is that big. This function reads the same step (`cu_seq_lens_q` and
`cu_seq_lens_k` bound each sequence's queries and keys in the packed tensors the paged cache returns) and
computes what the mask leaves: single-query decodes together, in one padded call, and each prefill chunk
causally against its own keys. The library's scheduler, paged cache, chunked prefill and preemption stay
as they are; only the arithmetic of the step changes.

The library builds its mask only for `sdpa` and `paged|eager` and accepts only those (or flash) when continuous
batching starts: so the model is loaded with SDPA, batching is set up, and then this implementation replaces
SDPA (kgpu.serving.generation_engine); from then on each step comes with its sequence bounds and
no mask. Called without sequence bounds (plain `model.generate`), it is transformers' own SDPA attention,
with SDPA's masks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "kgpu_varlen_sdpa"


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # [1, heads, query tokens of the step, head dim]
    key: torch.Tensor,  # [1, kv heads, keys read in the step, head dim]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None or query.shape[0] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    gqa = query.shape[1] != key.shape[1]
    # Sliding-window layers: the library reads a decode's last `window` keys only, so decodes need nothing more;
    # a prompt chunk's queries each see the `window` keys up to their own.
    plan = _plan(tuple(cu_q.tolist()), tuple(cu_k.tolist()), kwargs.get("sliding_window"), key.device)
    pieces: list[torch.Tensor] = []
    for part in plan:
        if isinstance(part, _Decodes):
            pieces.append(_decode_together(query, key, value, part, scaling, gqa))
            continue
        q = query[:, :, part.q0 : part.q1]
        k, v = key[:, :, part.k0 : part.k1], value[:, :, part.k0 : part.k1]
        if part.allowed is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=part.allowed, scale=scaling, enable_gqa=gqa
            )
        pieces.append(out)
    attention = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
    return attention.transpose(1, 2).contiguous(), None


@dataclass(frozen=True)
class _Decodes:
    """Consecutive single-query sequences, computed as one padded batch."""

    first_query: int
    count: int
    longest: int
    index: torch.Tensor  # [count * longest]: where each padded key row is in the step's keys (0 for padding)
    valid: torch.Tensor  # [count, 1, 1, longest]: which padded keys are real


@dataclass(frozen=True)
class _Chunk:
    """A prompt chunk against its own keys."""

    q0: int
    q1: int
    k0: int
    k1: int
    allowed: torch.Tensor | None  # None: causal over exactly its own keys


@functools.lru_cache(maxsize=4)
def _plan(
    bounds_q: tuple[int, ...], bounds_k: tuple[int, ...], window: int | None, device: torch.device
) -> tuple[_Decodes | _Chunk, ...]:
    """The step's parts, from its sequence bounds. Every layer of a step has the same bounds, so the parts (and
    their index and mask tensors) are made once per step instead of once per layer: per layer they took more
    of the loop's time than SDPA's own Python (bench/results/2026-12-05-generation-engine-step-cpu.md)."""
    parts: list[_Decodes | _Chunk] = []
    decodes: list[int] = []

    def flush_decodes() -> None:
        if decodes:
            parts.append(_decodes(bounds_q, bounds_k, decodes, device))
            decodes.clear()

    for i in range(len(bounds_q) - 1):
        q0, q1, k0, k1 = bounds_q[i], bounds_q[i + 1], bounds_k[i], bounds_k[i + 1]
        if q1 - q0 == 1:
            decodes.append(i)
            continue
        flush_decodes()
        queries, keys = q1 - q0, k1 - k0
        allowed = None
        if queries != keys or window is not None:
            # A later chunk of a prompt sees every earlier key, and causally its own (within a sliding window).
            allowed = torch.ones(queries, keys, dtype=torch.bool, device=device).tril(keys - queries)
            if window is not None:
                allowed = allowed.triu(keys - queries - window + 1)
        parts.append(_Chunk(q0, q1, k0, k1, allowed))
    flush_decodes()
    return tuple(parts)


def _decodes(bounds_q: tuple[int, ...], bounds_k: tuple[int, ...], sequences: list[int], device) -> _Decodes:
    lengths = [bounds_k[i + 1] - bounds_k[i] for i in sequences]
    longest = max(lengths)
    starts = torch.tensor([bounds_k[i] for i in sequences], device=device)
    offsets = torch.arange(longest, device=device)
    valid = offsets.unsqueeze(0) < torch.tensor(lengths, device=device).unsqueeze(1)  # [n, longest]
    index = torch.where(valid, starts.unsqueeze(1) + offsets, 0).flatten()
    # One query each, so consecutive in the step: their queries are a slice.
    return _Decodes(bounds_q[sequences[0]], len(sequences), longest, index, valid[:, None, None, :])


def _decode_together(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    part: _Decodes,
    scaling: float | None,
    gqa: bool,
) -> torch.Tensor:
    """Single-query sequences as one batch: their keys gathered into `[n, kv heads, longest, dim]` with a padding
    mask. Returns `[1, heads, n, dim]`, in query order."""
    heads, dim, n = key.shape[1], key.shape[3], part.count
    # `index_select` copies whole rows of keys; advanced indexing (`key[0][:, index]`) took 15 % of the loop's time
    # at concurrency 32, more than the attention itself (bench/results/2026-12-05-generation-engine-step-cpu.md).
    keys = key[0].index_select(1, part.index).view(heads, n, part.longest, dim).transpose(0, 1)
    values = value[0].index_select(1, part.index).view(heads, n, part.longest, dim).transpose(0, 1)
    q = (
        query[0][:, part.first_query : part.first_query + n].transpose(0, 1).unsqueeze(2)
    )  # [n, heads, 1, dim]
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=part.valid, scale=scaling, enable_gqa=gqa)
    return out.squeeze(2).transpose(0, 1).unsqueeze(0)  # [1, heads, n, dim]


def register() -> str:
    """Make the implementation known to transformers (idempotent); returns its name."""
    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
