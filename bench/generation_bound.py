#!/usr/bin/env python3
"""Where the time goes in the generation benchmark's workload on this machine, and how far batching can take it.

bench/generation.py's workload (the Azure LLM trace, prompts scaled to the model's context) carries about 2.9
prompt tokens per generated token. A naive server runs each request alone: a prefill, then one batch-1 decode
step per token. Batching cannot make a prefill cheaper (it is already a many-token forward pass), only the
decodes, so the best any batching server can do is to run every prompt token and every generated token at the
cost per token of a large forward pass. This script measures, on the benchmark model and the same workload:

1. the naive cost: `model.generate` per request, alone, and the share of it that is the prompt's prefill;
2. the batched cost per token: a prefill chunk (`--chunk` tokens), and a decode step of `--concurrency`
   sequences; from them the ideal batched tokens/s and its ratio to naive (the bound on "kgpu / naive");
3. kgpu's engine on the same fixed work (`--requests` requests, `--concurrency` at a time, until all end)
   with each attention continuous batching can run on a CPU: transformers' masked SDPA and its `paged|eager`
   over the whole step, and per-sequence attention (kgpu.serving.varlen_attention), one after the other.
   (The library accepts no other implementation for continuous batching; its flash ones need CUDA.)

    .venv/bin/python -m bench.generation_bound --json bench/results/generation-bound-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kgpu.serving.engine_threads import spin_briefly

spin_briefly()  # as bench/generation.py: every measurement with the same libgomp setting

import torch  # noqa: E402

from bench.common.results import write_results  # noqa: E402
from bench.generation import BENCH_DIR, Answer, engine_sender, model_and_workload, summarize  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--model-cache", type=Path, default=Path(tempfile.gettempdir()) / "kgpu-bench-models")
    parser.add_argument("--size", default="smollm2-135m")
    parser.add_argument("--prompt-scale", type=float, default=1 / 32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=24, help="requests timed alone with model.generate")
    parser.add_argument("--chunk", type=int, default=256, help="tokens of the prefill forward pass timed")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=64, help="fixed work of each engine run")
    parser.add_argument("--attentions", default="sdpa,eager,varlen", help="engine runs, one per attention")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "generation-bound-cpu.json")
    return parser.parse_args(argv)


def seconds(run, repeat: int = 5) -> float:
    """Shortest wall time of `run` over `repeat` calls, after one untimed call: the batched costs are the best
    this machine gave, so the bound they make leans towards batching (other work only slows a call down)."""
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def model_costs(model_dir: Path, items: list, args: argparse.Namespace) -> dict:
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    pad = model.config.pad_token_id
    sample = items[: args.sample]
    prefill_s = generate_s = 0.0
    prompt_tokens = sum(i.prompt_tokens for i in sample)
    output_tokens = sum(i.max_tokens for i in sample)
    generator = torch.Generator().manual_seed(args.seed)

    def tokens(*shape: int) -> torch.Tensor:
        return torch.randint(5, model.config.vocab_size, shape, generator=generator)

    with torch.inference_mode():
        model.generate(tokens(1, 8), max_new_tokens=4, do_sample=False, pad_token_id=pad)  # lazy set-up
        for item in sample:
            ids = tokens(1, item.prompt_tokens)
            started = time.perf_counter()
            model(ids, logits_to_keep=1)
            prefill_s += time.perf_counter() - started
            started = time.perf_counter()
            model.generate(ids, max_new_tokens=item.max_tokens, do_sample=False, pad_token_id=pad)
            generate_s += time.perf_counter() - started
        chunk_s = seconds(lambda: model(tokens(1, args.chunk), logits_to_keep=1))
        batch = args.concurrency
        context = round(statistics.mean(i.prompt_tokens + i.max_tokens / 2 for i in items))
        cache = DynamicCache(config=model.config)
        model(tokens(batch, context), cache=cache, logits_to_keep=1)
        step = tokens(batch, 1)

        def decode() -> None:
            model(step, cache=cache)
            cache.crop(-1)

        decode_s = seconds(decode)
    # The same requests on both sides: the sample's prompt and answer lengths.
    mean_prompt, mean_output = prompt_tokens / len(sample), output_tokens / len(sample)
    per_prefill_token = chunk_s / args.chunk
    per_decode_token = decode_s / batch
    ideal_request_s = mean_prompt * per_prefill_token + mean_output * per_decode_token
    naive_tps = output_tokens / generate_s
    ideal_tps = mean_output / ideal_request_s
    prefill_only_tps = mean_output / (mean_prompt * per_prefill_token)  # decodes free
    return {
        "sample_requests": len(sample),
        "sample_prompt_tokens": prompt_tokens,
        "sample_output_tokens": output_tokens,
        "naive_generate_s": round(generate_s, 3),
        "naive_prefill_s": round(prefill_s, 3),
        "naive_prefill_share": round(prefill_s / generate_s, 3),
        "naive_tokens_per_s": round(naive_tps, 2),
        "naive_decode_step_ms": round((generate_s - prefill_s) / output_tokens * 1000, 1),
        "prefill_chunk_ms": round(chunk_s * 1000, 1),
        "prefill_ms_per_token": round(per_prefill_token * 1000, 2),
        "decode_step_ms": round(decode_s * 1000, 1),
        "decode_ms_per_token": round(per_decode_token * 1000, 2),
        "decode_context_tokens": context,
        "workload_mean_prompt_tokens": round(statistics.mean(i.prompt_tokens for i in items), 2),
        "workload_mean_output_tokens": round(statistics.mean(i.max_tokens for i in items), 2),
        "ideal_batched_tokens_per_s": round(ideal_tps, 2),
        "ideal_batched_prefill_share": round(mean_prompt * per_prefill_token / ideal_request_s, 3),
        "bound_ratio_to_naive": round(ideal_tps / naive_tps, 2),
        "bound_ratio_to_naive_if_decodes_were_free": round(prefill_only_tps / naive_tps, 2),
    }


async def fixed_work(engine, items: list, concurrency: int) -> tuple[list[Answer], float]:
    """Every item once, `concurrency` at a time, until the last answer ends."""
    send = engine_sender(engine)
    gate = asyncio.Semaphore(concurrency)
    answers = [Answer(started=0.0) for _ in items]

    async def one(item, answer: Answer) -> None:
        async with gate:
            answer.started = time.perf_counter()
            await send(item, answer)

    started = time.perf_counter()
    await asyncio.gather(*(one(item, answer) for item, answer in zip(items, answers, strict=True)))
    return answers, time.perf_counter() - started


def engine_run(model_dir: Path, items: list, args: argparse.Namespace, attention: str) -> dict:
    from kgpu.serving.generation_engine import GenerationEngine

    engine = GenerationEngine(model_dir, device="cpu", attention=attention)
    engine.start()
    engine.warmup()
    try:
        answers, wall = asyncio.run(fixed_work(engine, items[: args.requests], args.concurrency))
    finally:
        engine.stop()
    row = summarize(answers, wall)  # bench/generation.py's counts and percentiles, over the fixed work
    p50, p99 = row["itl_p50_ms"], row["itl_p99_ms"]
    return {**row, "itl_p99_over_p50": round(p99 / p50, 2) if p50 and p99 is not None else None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir, items = model_and_workload(args)
    costs = model_costs(model_dir, items, args)
    for key, value in costs.items():
        print(f"{key:<45}{value}")
    engines = {name: engine_run(model_dir, items, args, name) for name in args.attentions.split(",")}
    print(
        f"{'engine attention':<18}{'tok/s':>8}{'seconds':>9}{'TTFT p50':>10}{'ITL p50':>9}{'p99':>9}{'p99/p50':>9}"
    )
    for attention, row in engines.items():
        print(f"{attention:<18}{row['tokens_per_s']:>8}{row['seconds']:>9}{row['ttft_p50_ms']:>10}"
              f"{row['itl_p50_ms']:>9}{row['itl_p99_ms']:>9}{row['itl_p99_over_p50']:>9}")  # fmt: skip
    speedup = None
    if "varlen" in engines and "sdpa" in engines:
        speedup = round(engines["varlen"]["tokens_per_s"] / engines["sdpa"]["tokens_per_s"], 2)
        print(f"per-sequence attention / masked SDPA: {speedup}x")
    machine = {
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    write_results(args.json, "generation_bound", {**vars(args), "model_dir": model_dir}, machine,
                  model=costs, engine=engines, varlen_over_sdpa=speedup)  # fmt: skip
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
