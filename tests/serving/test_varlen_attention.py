"""Per-sequence attention equals the library's masked SDPA over the same continuous-batching step."""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from kgpu.serving.varlen_attention import varlen_attention_forward


class Layer(torch.nn.Module):
    is_causal = True
    num_key_value_groups = 3


def step(queries: list[int], keys: list[int], window: int | None = None) -> tuple[torch.Tensor, ...]:
    """A packed step as the paged cache hands it over: sequence bounds, and the block-diagonal causal mask the
    library builds for SDPA (each sequence's queries see its earlier keys and, causally, their own)."""
    cu_q = torch.tensor([0, *torch.tensor(queries).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(keys).cumsum(0).tolist()], dtype=torch.int32)
    mask = torch.full((1, 1, int(cu_q[-1]), int(cu_k[-1])), float("-inf"))
    for i, (q, k) in enumerate(zip(queries, keys, strict=True)):
        allowed = torch.ones(q, k, dtype=torch.bool).tril(k - q)
        if window is not None:
            allowed = allowed.triu(k - q - window + 1)
        mask[0, 0, cu_q[i] : cu_q[i + 1], cu_k[i] : cu_k[i + 1]].masked_fill_(allowed, 0.0)
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 9, int(cu_q[-1]), 16, generator=generator)
    key, value = (torch.randn(1, 3, int(cu_k[-1]), 16, generator=generator) for _ in range(2))
    return query, key, value, mask, cu_q, cu_k


def test_decodes_first_chunks_and_later_chunks_equal_the_masked_step() -> None:
    # Decodes of different lengths, a prompt's first chunk, a later chunk after 20 cached keys, a decode after it.
    queries = [1, 1, 7, 1, 5, 1]
    keys = [9, 3, 7, 14, 25, 2]
    query, key, value, mask, cu_q, cu_k = step(queries, keys)
    expected, _ = sdpa_attention_forward(Layer(), query, key, value, mask, scaling=0.25)
    got, _ = varlen_attention_forward(
        Layer(), query, key, value, None, scaling=0.25, cu_seq_lens_q=cu_q, cu_seq_lens_k=cu_k
    )
    assert got.shape == expected.shape == (1, sum(queries), 9, 16)
    torch.testing.assert_close(got, expected)


def test_a_sliding_window_bounds_what_a_prompt_chunk_sees() -> None:
    # As the library reads a sliding layer: at most window - 1 earlier keys, so a decode reads exactly its window.
    window = 4
    queries, keys = [1, 6, 5, 1], [4, 6, 8, 3]
    query, key, value, mask, cu_q, cu_k = step(queries, keys, window)
    expected, _ = sdpa_attention_forward(Layer(), query, key, value, mask, scaling=0.25)
    got, _ = varlen_attention_forward(
        Layer(),
        query,
        key,
        value,
        None,
        scaling=0.25,
        cu_seq_lens_q=cu_q,
        cu_seq_lens_k=cu_k,
        sliding_window=window,
    )
    torch.testing.assert_close(got, expected)


def test_without_sequence_bounds_it_is_sdpa() -> None:
    query, key, value, _, _, _ = step([6], [6])
    expected, _ = sdpa_attention_forward(Layer(), query, key, value, None, scaling=0.25)
    got, _ = varlen_attention_forward(Layer(), query, key, value, None, scaling=0.25)
    torch.testing.assert_close(got, expected)
