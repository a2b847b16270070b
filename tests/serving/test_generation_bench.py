"""bench/generation.py's parts: trace prompts of the planned lengths, the closed loop on the real engine, and the
targets verdicts (the benchmark itself is a script; these check what its numbers are made of)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import generation


@pytest.fixture(scope="module")
def tokenizer(tiny_llm_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llm_dir, local_files_only=True)


def test_trace_prompts_have_their_planned_token_counts_and_fit_the_context(tokenizer) -> None:
    args = generation.parse_args(["--prompt-scale", "0.03", "--max-tokens", "40"])
    items = generation.workload(tokenizer, args, context=256, count=50)
    for item in items:
        assert len(tokenizer.encode(item.prompt, add_special_tokens=False)) == item.prompt_tokens
        assert item.prompt_tokens + item.max_tokens <= 256 - 8 and 1 <= item.max_tokens <= 40
    assert len({item.prompt_tokens for item in items}) > 5  # lengths follow the trace, not one value


def test_the_closed_loop_counts_tokens_and_latencies_from_the_engine(tiny_llm_dir: Path, tokenizer) -> None:
    from kgpu.serving.generation_engine import GenerationEngine

    args = generation.parse_args(["--prompt-scale", "0.01", "--max-tokens", "8"])
    items = generation.workload(tokenizer, args, context=256, count=20)
    engine = GenerationEngine(tiny_llm_dir, device="cpu")
    engine.start()
    engine.warmup()
    try:
        answers, seconds = asyncio.run(
            generation.closed_loop(generation.engine_sender(engine), items, 3, 2.0)
        )
    finally:
        engine.stop()
    row = generation.summarize(answers, seconds)
    assert row["failed"] == 0 and row["output_tokens"] == sum(a.tokens for a in answers) > 0
    assert row["tokens_per_s"] == pytest.approx(row["output_tokens"] / 2.0, rel=0.01)
    assert row["ttft_p50_ms"] is not None and row["ttft_p50_ms"] <= row["ttft_p99_ms"]


def test_targets_are_met_or_missed_with_their_numbers() -> None:
    def level(tokens_per_s: float, ttft: float = 100.0, itl50: float = 10.0, itl99: float = 20.0) -> dict:
        return {"tokens_per_s": tokens_per_s, "ttft_p50_ms": ttft, "itl_p50_ms": itl50, "itl_p99_ms": itl99}

    results = {
        "engine": {"32": level(100.0)},
        "kgpu": {"32": level(90.0, itl99=40.0), "1": level(5.0, ttft=104.0)},
        "naive": {"32": level(20.0), "1": level(5.0, ttft=100.0)},
    }
    checks = {check["target"]: (check["value"], check["met"]) for check in generation.targets(results)}
    assert checks["c=32 kgpu tokens/s >= 0.85x engine"] == (0.9, True)
    assert checks["c=32 kgpu tokens/s >= 5.0x naive"] == (4.5, False)
    assert checks["c=32 kgpu tokens/s >= 1.0x transformers"] == (None, None)
    assert checks["c=1 kgpu TTFT p50 within 5 ms of naive"] == (4.0, True)
    assert checks["c=32 kgpu inter-token p99 <= 3x p50"] == (4.0, False)


def test_the_bound_scripts_engine_run_counts_the_fixed_work_with_the_benchmarks_summary(
    tiny_llm_dir: Path, tokenizer
) -> None:
    from bench import generation_bound

    args = generation_bound.parse_args(["--requests", "6", "--concurrency", "3"])
    items = generation.workload(tokenizer, generation.parse_args(["--max-tokens", "6"]), context=256, count=8)
    row = generation_bound.engine_run(tiny_llm_dir, items, args, "sdpa")
    assert row["requests"] == 6 and row["failed"] == 0 and row["output_tokens"] > 0
    assert row["itl_p99_over_p50"] == pytest.approx(row["itl_p99_ms"] / row["itl_p50_ms"], abs=0.01)


def test_the_engine_ab_script_profiles_the_loop_thread_and_counts_the_fixed_work(
    tiny_llm_dir: Path, tokenizer
) -> None:
    from bench import generation_engine_ab

    items = generation.workload(tokenizer, generation.parse_args(["--max-tokens", "6"]), context=256, count=6)
    collected: dict = {}
    row = generation_engine_ab.run(
        tiny_llm_dir,
        items,
        "attention=varlen",
        3,
        lambda engine: generation_engine_ab.profile_loop(engine, collected),
    )
    assert row["requests"] == 6 and row["failed"] == 0 and row["output_tokens"] > 0 and row["cpu_s"] > 0
    assert collected["done"].is_set()
    profile = generation_engine_ab.breakdown(collected["profiler"].key_averages())
    assert profile["steps"] > 0  # the warm-up answer's steps and the fixed work's
    assert profile["kinds_ms"]["matrix products"] > 0 and profile["kinds_ms"]["step's own Python"] > 0
    assert sum(profile["kinds_ms"].values()) == pytest.approx(profile["total_ms"], abs=1.0)


def test_the_engine_ab_script_refuses_an_unknown_setting() -> None:
    from bench import generation_engine_ab

    with pytest.raises(SystemExit, match="unknown setting 'heads=4'"):
        generation_engine_ab.engine_options("attention=sdpa+heads=4")


def test_the_gpu_target_is_checked_only_on_a_gpu() -> None:
    def level(tokens_per_s: float) -> dict:
        return {"tokens_per_s": tokens_per_s, "ttft_p50_ms": 1.0, "itl_p50_ms": 1.0, "itl_p99_ms": 1.0}

    results = {"kgpu": {"64": level(1200.0)}, "naive": {"64": level(100.0)}}
    assert not any(c["target"].startswith("GPU") for c in generation.targets(results, "cpu"))
    gpu = {c["target"]: (c["value"], c["met"]) for c in generation.targets(results, "cuda")}
    assert gpu["GPU: c=64 kgpu tokens/s >= 10x naive"] == (12.0, True)
    results["kgpu"]["64"] = level(900.0)
    gpu = {c["target"]: (c["value"], c["met"]) for c in generation.targets(results, "cuda:0")}
    assert gpu["GPU: c=64 kgpu tokens/s >= 10x naive"] == (9.0, False)


def test_the_weights_read_bound_is_bandwidth_over_weight_bytes_per_sequence(tiny_llm_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from bench.common.weights_bound import weight_bytes, weights_read_bound_tokens_per_s

    # 4.8 TB/s over 1 GB of weights: 4,800 steps a second, 64 tokens each.
    assert weights_read_bound_tokens_per_s(4.8e12, 1_000_000_000, 64) == pytest.approx(307_200.0)
    with pytest.raises(ValueError):
        weights_read_bound_tokens_per_s(4.8e12, 0, 64)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, local_files_only=True)
    parameters = sum(p.numel() for p in model.parameters())
    assert weight_bytes(tiny_llm_dir, "bfloat16") == 2 * parameters
    assert weight_bytes(tiny_llm_dir, "float32") == 4 * parameters
    with pytest.raises(ValueError, match="dtype"):
        weight_bytes(tiny_llm_dir, "int3")


def test_each_level_gets_its_bound_and_each_contenders_fraction_of_it(
    tiny_llm_dir: Path, monkeypatch
) -> None:
    # The bandwidth is measured on a CUDA device, which this machine lacks: a fixed figure stands in for it.
    monkeypatch.setattr(generation, "measured_copy_bandwidth", lambda device: 2.0e12)
    from bench.common.weights_bound import weight_bytes

    size = weight_bytes(tiny_llm_dir, "bfloat16")
    results = {
        "kgpu": {"1": {"tokens_per_s": 50.0}, "64": {"tokens_per_s": 3000.0}},
        "naive": {"1": {"tokens_per_s": 40.0}},
    }
    args = generation.parse_args(["--device", "cuda"])
    assert generation.weights_read_bounds(results, tiny_llm_dir, generation.parse_args([])) is None
    bounds = generation.weights_read_bounds(results, tiny_llm_dir, args)
    assert (
        bounds["dtype"] == "bfloat16"
        and bounds["weight_bytes"] == size
        and bounds["bandwidth_gb_per_s"] == 2000.0
    )
    one, many = 2.0e12 / size, 2.0e12 / size * 64
    assert bounds["levels"]["1"] == {
        "bound_tokens_per_s": round(one, 1),
        "kgpu": round(50 / one, 4),
        "naive": round(40 / one, 4),
    }
    assert bounds["levels"]["64"] == {"bound_tokens_per_s": round(many, 1), "kgpu": round(3000 / many, 4)}
