"""Attention for transformers' continuous batching where no varlen kernel exists (CPUs): each sequence against
its own keys only. An option of the generation engine (`attention="varlen"`), not its default: per layer it
is several times cheaper than the library's masked SDPA on the benchmark's step shapes, and on fixed work at
concurrency 32 it took 9.9-22 % less CPU time than SDPA, but its wall-clock gain on the shared benchmark
machine was below 10 % in two of nine pairings (bench/results/2026-12-05-generation-engine-step-cpu.md), the bar
for changing the default; the linear layers take most of a step either way.

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
SDPA (kgpu.serving.generation_engine, when asked); from then on each step comes with its sequence bounds and
no mask. Called without sequence bounds (plain `model.generate`), it is transformers' own SDPA attention,
with SDPA's masks.
"""

from __future__ import annotations

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
    bounds_q, bounds_k = cu_q.tolist(), cu_k.tolist()
    gqa = query.shape[1] != key.shape[1]
    # Sliding-window layers: the library reads a decode's last `window` keys only, so decodes need nothing more;
    # a prompt chunk's queries each see the `window` keys up to their own.
    window = kwargs.get("sliding_window")
    pieces: list[torch.Tensor] = []
    decodes: list[int] = []  # sequences with one query, computed together

    def flush_decodes() -> None:
        if decodes:
            pieces.append(_decode_together(query, key, value, bounds_q, bounds_k, decodes, scaling, gqa))
            decodes.clear()

    for i in range(len(bounds_q) - 1):
        q0, q1, k0, k1 = bounds_q[i], bounds_q[i + 1], bounds_k[i], bounds_k[i + 1]
        if q1 - q0 == 1:
            decodes.append(i)
            continue
        flush_decodes()
        q, k, v = query[:, :, q0:q1], key[:, :, k0:k1], value[:, :, k0:k1]
        queries, keys = q1 - q0, k1 - k0
        if queries == keys and window is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa)
        else:  # a later chunk of a prompt sees every earlier key, and causally its own (within a sliding window)
            allowed = torch.ones(queries, keys, dtype=torch.bool, device=q.device).tril(keys - queries)
            if window is not None:
                allowed = allowed.triu(keys - queries - window + 1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling, enable_gqa=gqa)
        pieces.append(out)
    flush_decodes()
    attention = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
    return attention.transpose(1, 2).contiguous(), None


def _decode_together(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bounds_q: list[int],
    bounds_k: list[int],
    sequences: list[int],
    scaling: float | None,
    gqa: bool,
) -> torch.Tensor:
    """Single-query sequences as one batch: their keys gathered into `[n, kv heads, longest, dim]` with a padding
    mask. Returns `[1, heads, n, dim]`, in the order given (consecutive in the step, so in query order)."""
    lengths = [bounds_k[i + 1] - bounds_k[i] for i in sequences]
    longest = max(lengths)
    device = key.device
    starts = torch.tensor([bounds_k[i] for i in sequences], device=device)
    offsets = torch.arange(longest, device=device)
    valid = offsets.unsqueeze(0) < torch.tensor(lengths, device=device).unsqueeze(1)  # [n, longest]
    index = torch.where(valid, starts.unsqueeze(1) + offsets, 0).flatten()
    # `index_select` copies whole rows of keys; advanced indexing (`key[0][:, index]`) took 15 % of the loop's time
    # at concurrency 32, more than the attention itself (bench/results/2026-12-05-generation-engine-step-cpu.md).
    heads, dim = key.shape[1], key.shape[3]
    keys = key[0].index_select(1, index).view(heads, len(sequences), longest, dim).transpose(0, 1)
    values = value[0].index_select(1, index).view(heads, len(sequences), longest, dim).transpose(0, 1)
    # One query each, consecutive in the step: a slice, not a gather.
    first = bounds_q[sequences[0]]
    q = query[0][:, first : first + len(sequences)].transpose(0, 1).unsqueeze(2)  # [n, heads, 1, dim]
    out = F.scaled_dot_product_attention(
        q, keys, values, attn_mask=valid[:, None, None, :], scale=scaling, enable_gqa=gqa
    )
    return out.squeeze(2).transpose(0, 1).unsqueeze(0)  # [1, heads, n, dim]


def register() -> str:
    """Make the implementation known to transformers (idempotent); returns its name."""
    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
