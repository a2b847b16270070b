#!/usr/bin/env python3
"""Text generation, closed loop: kgpu against its own engine, a naive server and `transformers serve`.

Prompts and answer lengths come from the Azure LLM inference trace (code, 2023) in ../shared/data: context
lengths scaled by --prompt-scale (the trace's contexts run to 7,437 tokens; a CPU run cannot prefill that at
concurrency 64 in reasonable time), answer lengths as in the trace, capped at --max-tokens. Each of
--concurrency clients sends one streamed /v1/completions request after another for --duration seconds
(greedy; the benchmark model cannot end an answer early, so every answer runs its trace length), then the
requests in flight finish. Reported per contender and concurrency: output tokens/s, time to first token
p50/p99 and the gap between tokens p50/p99.

Contenders, run one after another on the same machine:
  engine        kgpu's generation engine in this process, no HTTP (the ceiling)
  kgpu          `kgpu up` with one generation replica, requests through its gateway
  naive         FastAPI calling `model.generate` per request, one at a time (bench/common/naive_generation_server.py)
  transformers  `transformers serve --continuous-batching` on the same local checkpoint

    .venv/bin/python -m bench.generation --duration 20 --json bench/results/generation-cpu.json

On a GPU (bf16, a random model of Qwen2.5-0.5B's shape) the run also measures the device's memory bandwidth
and reports each contender's tokens/s as a fraction of the weights-read bound (bench/common/weights_bound.py),
and checks kgpu >= 10x naive at concurrency 64:

    .venv/bin/python -m bench.generation --device cuda --dtype bfloat16 --size qwen2.5-0.5b-shape \
        --json bench/results/generation-gpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kgpu.serving.engine_threads import spin_briefly

spin_briefly()  # every contender runs with the same libgomp setting (the servers inherit the environment)

import httpx  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402

from bench.common.kgpu_launch import REPO_ROOT, kgpu_executable  # noqa: E402
from bench.common.results import write_results  # noqa: E402
from bench.common.servers import ServerProcess, free_port  # noqa: E402
from bench.common.weights_bound import (  # noqa: E402
    measured_copy_bandwidth,
    weight_bytes,
    weights_read_bound_tokens_per_s,
)
from kgpu.sim.azure_trace import DEFAULT_TRACE, load_azure_trace  # noqa: E402
from kgpu.sim.traces import TraceError  # noqa: E402

BENCH_DIR = REPO_ROOT / "bench"
TRACE = REPO_ROOT / DEFAULT_TRACE
CONTENDERS = ("engine", "kgpu", "naive", "transformers")
SERVED = "bench-llm"
READY_TIMEOUT_S = 600.0


@dataclass
class WorkItem:
    prompt: str
    prompt_tokens: int
    max_tokens: int


@dataclass
class Answer:
    started: float
    pieces: list[float] = field(default_factory=list)  # arrival of each piece carrying tokens
    tokens: int = 0
    ok: bool = True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="default: write a random SmolLM2-135M shape"
    )
    parser.add_argument("--model-cache", type=Path, default=Path(tempfile.gettempdir()) / "kgpu-bench-models")
    parser.add_argument("--size", default="smollm2-135m", help="shape written when --model-dir is not given")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of new requests per level")
    parser.add_argument("--prompt-scale", type=float, default=1 / 32)
    parser.add_argument("--max-tokens", type=int, default=128, help="cap on the trace's answer lengths")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "generation-cpu.json")
    parser.add_argument("--log-dir", type=Path, default=Path(tempfile.gettempdir()) / "kgpu-bench-logs")
    return parser.parse_args(argv)


# -- model and workload --------------------------------------------------------------------------------
def bench_model(args: argparse.Namespace) -> Path:
    if args.model_dir is not None:
        return args.model_dir
    directory = args.model_cache / f"{args.size}-unreachable-eos"
    if not (directory / "config.json").exists():
        from kgpu.serving.random_llm import write_random_llm

        print(f"writing a random {args.size} Llama to {directory}", flush=True)
        write_random_llm(directory, args.size, reachable_eos=False)
    return directory


def one_token_words(tokenizer) -> list[str]:
    """Vocabulary entries that are a space and a word, each one token alone and after another: a prompt of
    n of them is n tokens for every server."""
    words = []
    for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        text = tokenizer.convert_tokens_to_string([token])
        if (
            text.startswith(" ")
            and text[1:].isalpha()
            and len(tokenizer.encode(text + text, add_special_tokens=False)) == 2
        ):
            words.append(text)
    if len(words) < 20:
        raise SystemExit("the tokenizer has too few one-token words to build prompts from")
    return words


def workload(tokenizer, args: argparse.Namespace, context: int, count: int = 4000) -> list[WorkItem]:
    """Trace requests with scaled prompts; a prompt and its answer always fit the model's `context`."""
    try:
        trace = load_azure_trace(TRACE)
    except TraceError as exc:
        raise SystemExit(str(exc)) from None
    rows = [(request.context_tokens, request.generated_tokens) for request in trace]
    rng = random.Random(args.seed)
    words = one_token_words(tokenizer)
    items = []
    for trace_context, generated in rng.choices(rows, k=count):
        max_tokens = max(1, min(args.max_tokens, generated))
        prompt_tokens = max(4, min(round(trace_context * args.prompt_scale), context - max_tokens - 8))
        prompt = "".join(rng.choices(words, k=prompt_tokens))
        items.append(WorkItem(prompt, prompt_tokens, max_tokens))
    return items


# -- load ------------------------------------------------------------------------------------------------
async def closed_loop(
    send, items: list[WorkItem], concurrency: int, duration: float
) -> tuple[list[Answer], float]:
    """`concurrency` clients, each sending the next item when its last answer ends, for `duration` seconds;
    then every request still in flight is cancelled (a client disconnect), so a level lasts exactly that long.
    Only what arrived within the window counts."""
    answers: list[Answer] = []
    position = 0

    async def client() -> None:
        nonlocal position
        while True:
            item = items[position % len(items)]
            position += 1
            answer = Answer(started=time.perf_counter())
            answers.append(answer)
            try:
                await send(item, answer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # counted, not fatal: a failed request must show in the report
                answer.ok = False
                print(f"  request failed: {type(exc).__name__}: {exc}", flush=True)

    clients = [asyncio.create_task(client()) for _ in range(concurrency)]
    await asyncio.sleep(duration)
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    return answers, duration


def http_sender(http: httpx.AsyncClient, path: str, model: str):
    async def send(item: WorkItem, answer: Answer) -> None:
        body = {
            "model": model, "prompt": item.prompt, "max_tokens": item.max_tokens, "temperature": 0,
            "stream": True,
        }  # fmt: skip
        async with http.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = orjson.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(f"error event: {event['error']}")
                if event.get("choices"):  # one event per generated token, in every contender
                    answer.pieces.append(time.perf_counter())
                    answer.tokens += 1

    return send


def engine_sender(engine):
    from kgpu.serving.generation_engine import GenerationRequest

    async def send(item: WorkItem, answer: Answer) -> None:
        request = GenerationRequest(engine.tokenize(item.prompt), item.max_tokens)
        async for delta in engine.generate(request):
            if delta.token_ids:
                answer.pieces.append(time.perf_counter())
                answer.tokens += len(delta.token_ids)

    return send


def summarize(answers: list[Answer], elapsed: float) -> dict:
    """Requests started in the window; tokens that arrived in it; TTFT of those whose first token did."""
    done = [a for a in answers if a.ok and a.pieces]
    ttft = [a.pieces[0] - a.started for a in done]
    gaps = [after - before for a in done for before, after in itertools.pairwise(a.pieces)]

    def pct(values: list[float], q: float) -> float | None:
        return (
            round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 1)
            if len(values) > 1
            else None
        )

    return {
        "requests": len(answers),
        "first_token_in_window": len(done),
        "failed": sum(1 for a in answers if not a.ok),
        "output_tokens": sum(a.tokens for a in done),
        "seconds": round(elapsed, 2),
        "tokens_per_s": round(sum(a.tokens for a in done) / elapsed, 2),
        "ttft_p50_ms": pct(ttft, 50),
        "ttft_p99_ms": pct(ttft, 99),
        "itl_p50_ms": pct(gaps, 50),
        "itl_p99_ms": pct(gaps, 99),
    }


# -- contenders --------------------------------------------------------------------------------------------
def server_command(name: str, args: argparse.Namespace, model_dir: Path, port: int, work: Path) -> list[str]:
    if name == "kgpu":
        service = {
            "apiVersion": "kgpu.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": SERVED},
            "spec": {"model": {"uri": str(model_dir), "task": "generation"}, "replicas": 1,
                     "runtime": {"device": args.device, "dtype": args.dtype}},
        }  # fmt: skip
        if args.device == "cuda":
            service["spec"]["resources"] = {
                "limits": {"nvidia.com/gpu": 1},
                "requests": {"nvidia.com/gpu": 1},
            }
        path = work / "service.yaml"
        path.write_text(yaml.safe_dump(service))
        return [
            *kgpu_executable(),
            "up",
            "-f",
            str(path),
            "--port",
            str(port),
            "--state-dir",
            str(work / "state"),
        ]
    if name == "naive":
        return [sys.executable, "-m", "bench.common.naive_generation_server", "--model-dir", str(model_dir),
                "--port", str(port), "--device", args.device, "--dtype", args.dtype]  # fmt: skip
    if name == "transformers":
        executable = Path(sys.executable).parent / "transformers"
        return [str(executable), "serve", str(model_dir), "--continuous-batching", "--port", str(port),
                "--host", "127.0.0.1", "--device", args.device, "--log-level", "warning"]  # fmt: skip
    raise ValueError(name)


def served_model(name: str, model_dir: Path) -> str:
    return SERVED if name == "kgpu" else str(model_dir)


async def wait_ready(server: ServerProcess, model: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    body = {"model": model, "prompt": " hello", "max_tokens": 2, "temperature": 0}
    last = "no answer"
    async with httpx.AsyncClient(timeout=60) as http:
        while time.monotonic() < deadline:
            if not server.alive():
                raise SystemExit(f"{server.name} exited before it was ready; log: {server.log_path}")
            try:
                response = await http.post(server.base_url + "/v1/completions", json=body)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            await asyncio.sleep(1.0)
    raise SystemExit(f"{server.name} not ready after {READY_TIMEOUT_S:.0f}s ({last}); log: {server.log_path}")


async def run_contender(
    name: str, args: argparse.Namespace, model_dir: Path, items: list[WorkItem], levels: list[int]
) -> dict:
    results: dict[str, dict] = {}
    if name == "engine":
        from kgpu.serving.generation_engine import GenerationEngine

        engine = GenerationEngine(model_dir, device=args.device, dtype=args.dtype)
        engine.start()
        engine.warmup()
        try:
            for level in levels:
                results[str(level)] = summarize(
                    *await closed_loop(engine_sender(engine), items, level, args.duration)
                )
                print(f"  {name} c={level}: {results[str(level)]}", flush=True)
        finally:
            engine.stop()
        return results
    for level in levels:
        # A fresh server per level: a server that keeps computing answers its clients abandoned at the end
        # of the last level (the naive one does) would charge that backlog to this one.
        results[str(level)] = await run_server_level(name, args, model_dir, items, level)
        print(f"  {name} c={level}: {results[str(level)]}", flush=True)
    return results


async def run_server_level(
    name: str, args: argparse.Namespace, model_dir: Path, items: list[WorkItem], level: int
) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"kgpu-bench-{name}-") as tmp:
        port = free_port()
        args.log_dir.mkdir(parents=True, exist_ok=True)
        command = server_command(name, args, model_dir, port, Path(tmp))
        server = ServerProcess(name, command, port, args.log_dir / f"generation-{name}-c{level}.log")
        server.start(
            env={
                "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]),
            }
        )
        try:
            model = served_model(name, model_dir)
            await wait_ready(server, model)
            limits = httpx.Limits(max_connections=level + 8, max_keepalive_connections=level + 8)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=600, limits=limits) as http:
                return summarize(
                    *await closed_loop(
                        http_sender(http, "/v1/completions", model), items, level, args.duration
                    )
                )
        finally:
            server.stop()


# -- report ------------------------------------------------------------------------------------------------
def targets(results: dict, device: str = "cpu") -> list[dict]:
    """The issue's targets, each met or missed with its number (None where a contender did not run): the CPU
    ones, and on a GPU also kgpu at 64 >= 10x naive."""

    def get(contender: str, level: str, key: str) -> float | None:
        return results.get(contender, {}).get(level, {}).get(key)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    checks = []
    kgpu32 = get("kgpu", "32", "tokens_per_s")
    for against, goal in (("engine", 0.85), ("naive", 5.0), ("transformers", 1.0)):
        value = ratio(kgpu32, get(against, "32", "tokens_per_s"))
        checks.append({"target": f"c=32 kgpu tokens/s >= {goal}x {against}", "value": value,
                       "met": None if value is None else value >= goal})  # fmt: skip
    k1, n1 = get("kgpu", "1", "ttft_p50_ms"), get("naive", "1", "ttft_p50_ms")
    gap = None if k1 is None or n1 is None else round(k1 - n1, 1)
    checks.append(
        {
            "target": "c=1 kgpu TTFT p50 within 5 ms of naive",
            "value": gap,
            "met": None if gap is None else gap <= 5,
        }
    )
    p50, p99 = get("kgpu", "32", "itl_p50_ms"), get("kgpu", "32", "itl_p99_ms")
    spread = ratio(p99, p50)
    checks.append(
        {
            "target": "c=32 kgpu inter-token p99 <= 3x p50",
            "value": spread,
            "met": None if spread is None else spread <= 3,
        }
    )
    if device.startswith("cuda"):
        value = ratio(get("kgpu", "64", "tokens_per_s"), get("naive", "64", "tokens_per_s"))
        checks.append({"target": "GPU: c=64 kgpu tokens/s >= 10x naive", "value": value,
                       "met": None if value is None else value >= 10})  # fmt: skip
    return checks


def weights_read_bounds(results: dict, model_dir: Path, args: argparse.Namespace) -> dict | None:
    """On a GPU, each concurrency's weights-read bound and each contender's fraction of it."""
    if not args.device.startswith("cuda"):
        return None
    dtype = "bfloat16" if args.dtype == "auto" else args.dtype
    bandwidth = measured_copy_bandwidth(args.device)
    size = weight_bytes(model_dir, dtype)
    bounds: dict = {
        "bandwidth_gb_per_s": round(bandwidth / 1e9, 1),
        "weight_bytes": size,
        "dtype": dtype,
        "levels": {},
    }
    for level in sorted({level for levels in results.values() for level in levels}, key=int):
        bound = weights_read_bound_tokens_per_s(bandwidth, size, int(level))
        bounds["levels"][level] = {"bound_tokens_per_s": round(bound, 1)} | {
            name: round(levels[level]["tokens_per_s"] / bound, 4)
            for name, levels in results.items()
            if level in levels
        }
    return bounds


def print_table(results: dict, checks: list[dict]) -> None:
    header = f"{'contender':<13}{'c':>4}{'reqs':>6}{'fail':>5}{'tok/s':>9}{'TTFT p50':>10}{'p99':>9}{'ITL p50':>9}{'p99':>9}"
    print(header)
    for name, levels in results.items():
        for level, row in levels.items():
            print(f"{name:<13}{level:>4}{row['requests']:>6}{row['failed']:>5}{row['tokens_per_s']:>9}"
                  f"{row['ttft_p50_ms']!s:>10}{row['ttft_p99_ms']!s:>9}{row['itl_p50_ms']!s:>9}{row['itl_p99_ms']!s:>9}")  # fmt: skip
    for check in checks:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[check["met"]]
        print(f"{check['target']}: {check['value']} ({verdict})")


def model_and_workload(args: argparse.Namespace) -> tuple[Path, list[WorkItem]]:
    """The benchmark model's directory and the trace workload made for it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import json

    from transformers import AutoTokenizer

    model_dir = bench_model(args)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    context = int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"])
    return model_dir, workload(tokenizer, args, context)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir, items = model_and_workload(args)
    levels = [int(level) for level in args.concurrency.split(",")]
    contenders = [name for name in args.contenders.split(",") if name]
    results: dict[str, dict] = {}
    for name in contenders:
        print(f"{name}: concurrency {levels}, {args.duration:.0f}s each", flush=True)
        results[name] = asyncio.run(run_contender(name, args, model_dir, items, levels))
    checks = targets(results, args.device)
    print_table(results, checks)
    bounds = weights_read_bounds(results, model_dir, args)
    if bounds is not None:
        print(
            f"weights-read bound ({bounds['bandwidth_gb_per_s']} GB/s measured, {bounds['weight_bytes']} bytes):"
        )
        for level, row in bounds["levels"].items():
            print(f"  c={level}: {row}")
    import torch

    machine = {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2), "device": args.device,
               "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}  # fmt: skip
    config = {**vars(args), "model_dir": model_dir, "mean_prompt_tokens": statistics.mean(i.prompt_tokens for i in items),
              "mean_max_tokens": statistics.mean(i.max_tokens for i in items)}  # fmt: skip
    write_results(args.json, "generation", config, machine, results=results, targets=checks,
                  weights_read_bound=bounds)  # fmt: skip
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
