#!/usr/bin/env python3
"""The padded forward pass (the one a GPU runs) with the 2-D attention mask against a ready boolean
(batch, 1, 1, length) mask, paired: rounds alternate the order, medians of each.

With a 2-D mask transformers builds a (batch, 1, length, length) mask in Python and first checks whether
any token is padded, which on a GPU reads the mask back (a host sync per pass). A CPU cannot show the
sync, only the host time saved (``--device cuda`` shows both); a model cut to no layers shows it best, the full model hides it:

    .venv/bin/python -m bench.common.model --layers 0 --out /tmp/minilm-l0
    .venv/bin/python -m bench.ready_mask --model-dir /tmp/minilm-l0 --json bench/results/ready-mask-l0.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.common.machine import machine_facts
from bench.common.model import check_model_dir, example_model_dir
from bench.common.results import write_results
from bench.common.workload import DEFAULT_SEED, load_vocabulary, make_sentences
from kgpu.serving.engine import EmbeddingEngine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the example model")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU also shows the sync saved)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    check_model_dir(parser, args.model_dir)
    model_dir = args.model_dir or example_model_dir()

    engine = EmbeddingEngine(model_dir, device=args.device, unpadded=False)
    ids = engine.tokenize(make_sentences(args.batch, DEFAULT_SEED, load_vocabulary(model_dir)))
    times: dict[bool, list[float]] = {False: [], True: []}
    with torch.inference_mode():
        engine._forward(ids)  # warm
        for round_ in range(args.rounds):
            for ready in (True, False) if round_ % 2 else (False, True):
                engine._model_takes_ready_mask = ready
                started = time.perf_counter()
                engine._forward(ids).cpu()  # waits for the device, as a replica's batch does
                times[ready].append(time.perf_counter() - started)
    two_d, ready = (statistics.median(times[key]) * 1e3 for key in (False, True))
    print(f"model {model_dir}, batch {args.batch} mixed sentences, padded forward, {args.rounds} rounds")
    print(f"{'mask':<12} {'median ms':>10}")
    print(f"{'2-D':<12} {two_d:>10.3f}")
    print(f"{'ready 4-D':<12} {ready:>10.3f}")
    print(f"ready / 2-D: {ready / two_d:.3f}")
    if args.json:
        config = vars(args) | {"model_dir": model_dir}
        median_ms = {"2d": two_d, "ready": ready}
        write_results(
            args.json,
            "ready_mask",
            config,
            machine_facts(args.device),
            median_ms=median_ms,
            ratio=ready / two_d,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
