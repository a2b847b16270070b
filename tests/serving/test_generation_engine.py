"""The generation engine on transformers' continuous batching, against `model.generate` on the same weights."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from kgpu.serving.generation_engine import GenerationEngine, GenerationRequest
from kgpu.serving.sampling import Sampling

PROMPTS = [
    "def hello(world):",
    "import os\nimport sys\n",
    "The quick brown fox",
    "class Node:\n    def __init__(self, value):\n        self.value = value\n"
    * 3,  # longer than a prefill chunk
    "x",
    "return self._cache[key]",
]
MAX_TOKENS = [12, 6, 10, 8, 10, 6]


@pytest.fixture(scope="module", params=["auto", "sdpa"])
def engine(tiny_llm_dir: Path, request: pytest.FixtureRequest):
    # A small prefill chunk makes the long prompt above take several steps beside the others' decodes. Every test
    # runs with the default attention (on CPUs per-sequence attention, kgpu.serving.varlen_attention) and with the
    # library's SDPA.
    engine = GenerationEngine(tiny_llm_dir, device="cpu", prefill_chunk_tokens=32, attention=request.param)
    engine.start()
    yield engine
    engine.stop()


async def answer(engine: GenerationEngine, request: GenerationRequest) -> tuple[str, list[int], str | None]:
    text, tokens, finish = "", [], None
    async for delta in engine.generate(request):
        text += delta.text
        tokens += delta.token_ids
        finish = delta.finish_reason
    return text, tokens, finish


def reference(engine: GenerationEngine, ids: list[int], max_tokens: int) -> list[int]:
    with torch.no_grad():
        out = engine.model.generate(
            torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False, eos_token_id=engine.eos_token_ids
        )
    return out[0, len(ids) :].tolist()


async def test_greedy_answers_under_concurrent_load_equal_each_alone_and_generate(
    engine: GenerationEngine,
) -> None:
    ids = [engine.tokenize(prompt) for prompt in PROMPTS]
    assert len(ids[3]) > engine.prefill_chunk_tokens
    requests = [GenerationRequest(prompt, n) for prompt, n in zip(ids, MAX_TOKENS, strict=True)]
    together = await asyncio.gather(*(answer(engine, request) for request in requests))
    alone = [await answer(engine, request) for request in requests]
    for request, (text, tokens, finish), single in zip(requests, together, alone, strict=True):
        expected = reference(engine, request.prompt_ids, request.max_tokens)
        assert tokens == expected
        assert single[1] == expected
        assert text == engine.tokenizer.decode(tokens, skip_special_tokens=True)
        ended_on_eos = tokens[-1] in engine.eos_token_ids
        assert finish == ("stop" if ended_on_eos else "length")
        assert ended_on_eos or len(tokens) == request.max_tokens


async def test_a_seed_makes_sampling_reproducible_and_seeds_differ(engine: GenerationEngine) -> None:
    ids = engine.tokenize(PROMPTS[0])

    def sampled(seed: int) -> GenerationRequest:
        return GenerationRequest(ids, 24, Sampling(temperature=1.0, top_p=0.95, seed=seed))

    first, second, other = await asyncio.gather(
        answer(engine, sampled(7)), answer(engine, sampled(7)), answer(engine, sampled(8))
    )
    assert first[1] == second[1]
    assert first[1] != other[1]
    assert first[1] != reference(engine, ids, 24)  # sampled, not greedy


async def test_a_stop_string_ends_the_answer_before_it(engine: GenerationEngine) -> None:
    ids = engine.tokenize(PROMPTS[2])
    full, _, _ = await answer(engine, GenerationRequest(ids, 30))
    cut = next(i for i in range(4, len(full) - 3) if full.find(full[i : i + 3]) == i)
    stop = full[cut : cut + 3]
    text, _, finish = await answer(engine, GenerationRequest(ids, 30, stop=(stop, "never appears")))
    assert (text, finish) == (full[:cut], "stop")


async def test_closing_an_answer_frees_its_sequence_and_kv_blocks(engine: GenerationEngine) -> None:
    ids = engine.tokenize(PROMPTS[3])
    # The engine is shared with earlier tests: measure the baseline once their sequences have left
    # and their blocks are back, or a block freed meanwhile hides the one this answer takes.
    for _ in range(300):
        if engine.running_sequences() == 0 and engine.waiting_sequences() == 0:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    before = engine.kv_cache_usage()
    stream = engine.generate(GenerationRequest(ids, 200))
    async for _ in stream:
        break
    assert engine.running_sequences() == 1
    assert engine.kv_cache_usage() > before
    await stream.aclose()
    for _ in range(200):
        if engine.running_sequences() == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.running_sequences() == 0
    assert engine.kv_cache_usage() == pytest.approx(before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
async def test_cuda_greedy_answers_under_load_equal_generate_and_seeds_reproduce(tiny_llm_dir: Path) -> None:
    gpu = GenerationEngine(tiny_llm_dir, device="cuda", dtype="float32")
    assert gpu.device.startswith("cuda")
    gpu.start()
    try:
        ids = [gpu.tokenize(prompt) for prompt in PROMPTS]
        requests = [GenerationRequest(prompt, n) for prompt, n in zip(ids, MAX_TOKENS, strict=True)]
        together = await asyncio.gather(*(answer(gpu, request) for request in requests))
        for request, (_, tokens, _) in zip(requests, together, strict=True):
            with torch.no_grad():
                out = gpu.model.generate(
                    torch.tensor([request.prompt_ids], device="cuda"), max_new_tokens=request.max_tokens,
                    do_sample=False, eos_token_id=gpu.eos_token_ids,
                )  # fmt: skip
            assert tokens == out[0, len(request.prompt_ids) :].tolist()
        sampled = GenerationRequest(ids[0], 16, Sampling(temperature=1.0, top_p=0.9, seed=3))
        first, second = await asyncio.gather(answer(gpu, sampled), answer(gpu, sampled))
        assert first[1] == second[1]
    finally:
        gpu.stop()


def test_attention_on_a_cpu_is_per_sequence_unless_asked(
    engine: GenerationEngine, tiny_llm_dir: Path, request: pytest.FixtureRequest
) -> None:
    from kgpu.serving.varlen_attention import NAME

    asked = request.node.callspec.params["engine"]
    assert engine.model.config._attn_implementation == {"auto": NAME, "sdpa": "sdpa"}[asked]
    with pytest.raises(ValueError, match="attention must be one of auto, sdpa, varlen, eager, not 'flex'"):
        GenerationEngine(tiny_llm_dir, device="cpu", attention="flex")
