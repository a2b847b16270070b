"""Write a random-initialised Llama checkpoint with a real tokenizer and a chat template, in Hugging Face layout.

Tests and benchmarks of the generation runtime need a causal language model that loads exactly as a published
checkpoint does (config.json, model.safetensors, tokenizer.json, tokenizer_config.json with a chat template,
generation_config.json) without any download. The weights are random, so answers are gibberish, but the compute
per token is that of the shape written: `tiny` (a few hundred thousand parameters, milliseconds per step on a
CPU) for tests, `smollm2-135m` (SmolLM2-135M's published shape) for the benchmark, `qwen2.5-0.5b-shape` for a GPU.

The tokenizer is a byte-level BPE trained here with `tokenizers` on text that ships with Python (its standard
library's sources), so every string round-trips and the vocabulary is that of a real, if small, BPE. A shape
whose vocabulary is larger than the trained BPE gets the missing ids as plain added tokens (``<|id_N|>``), so
every id the random model can emit decodes to text.

    python -m kgpu.serving.random_llm --size tiny --out /tmp/tiny-chat
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Shapes: layer counts and widths of the named published models (their config.json); `tiny` is ours.
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
    "smollm2-135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 2048,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
    "qwen2.5-0.5b-shape": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 4096,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
    },
}

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# ChatML, the template of SmolLM2-Instruct and Qwen2.5-Instruct.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Trained BPE vocabulary: enough merges for real words, few enough to train in about a second.
_TRAINED_VOCAB = 512
_CORPUS_FILES = 40
# Random weights drawn with the usual std of 0.02 give near-uniform logits, where greedy decoding is decided by
# rounding; a wider init gives clear winners, so greedy answers are stable under batching like a trained model's.
_INIT_STD = 0.2


def _corpus() -> list[str]:
    """Text every Python installation has: the first standard-library modules' sources, in a fixed order."""
    stdlib = Path(json.__file__).resolve().parent.parent
    files = sorted(path for path in stdlib.glob("*.py") if path.is_file())[:_CORPUS_FILES]
    return [path.read_text(encoding="utf-8", errors="replace") for path in files]


def train_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE trained on the corpus, padded with added tokens up to `vocab_size` ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trained = min(vocab_size, _TRAINED_VOCAB)
    trainer = trainers.BpeTrainer(
        vocab_size=trained,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    missing = vocab_size - tokenizer.get_vocab_size()
    if missing > 0:
        tokenizer.add_tokens([f"<|id_{i}|>" for i in range(tokenizer.get_vocab_size(), vocab_size)])
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} ids, expected {vocab_size}")
    return tokenizer


def write_random_llm(out: Path, size: str = "tiny", seed: int = 0, reachable_eos: bool = True) -> Path:
    """Write the checkpoint to `out` (created) and return it.

    `reachable_eos=False` zeroes the end-of-sequence token's output row, so its logit is 0 while random rows
    spread far wider: greedy decoding then never ends an answer early, and every answer runs to its
    `max_tokens` (a benchmark's answer lengths are then those of its trace)."""
    if size not in SHAPES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SHAPES)}")
    import torch  # only where a model is written
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shape = SHAPES[size]
    tokenizer = train_tokenizer(shape["vocab_size"])
    eos, bos = tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("<|endoftext|>")
    config = LlamaConfig(
        **shape, bos_token_id=bos, eos_token_id=eos, pad_token_id=bos, initializer_range=_INIT_STD
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if not reachable_eos:
        with torch.no_grad():
            model.get_output_embeddings().weight[eos].zero_()
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=bos)
    model.save_pretrained(out, safe_serialization=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=shape["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kgpu.serving.random_llm", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--size", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--out", type=Path, required=True, help="directory to write (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--unreachable-eos", action="store_true", help="answers always run to max_tokens (benchmarks)"
    )
    args = parser.parse_args(argv)
    write_random_llm(args.out, args.size, args.seed, reachable_eos=not args.unreachable_eos)
    print(f"wrote a random {args.size} Llama to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
