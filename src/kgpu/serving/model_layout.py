"""Read what a model directory says about itself: weights, tokenizer, pooling, normalization, length.

Both plain transformers directories and sentence-transformers directories are understood. For the
latter, modules.json decides where the transformer lives, 1_Pooling/config.json the pooling modes and a
Normalize module whether outputs are L2-normalized; sentence_bert_config.json caps the sequence length.
Reading this up front lets a bad directory fail with one clear message before any weights are loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
VOCAB_FILES = ("vocab.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "vocab.json")

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "lasttoken")
# Older configs use one boolean per mode; sentence-transformers concatenates enabled modes in this order.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ST_PREFIX = "sentence_transformers.models."
_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}
_DEFAULT_MAX_SEQ_LEN = 512


class ModelLayoutError(ValueError):
    """The directory is not a loadable transformers / sentence-transformers model."""


@dataclass(frozen=True)
class ModelLayout:
    transformer_dir: Path
    config: dict[str, Any]
    tokenizer_file: Path | None  # tokenizer.json when present (the fast path); else built from vocab files
    pooling_modes: tuple[str, ...]
    normalize: bool
    max_seq_len: int

    @property
    def hidden_size(self) -> int:
        return int(self.config.get("hidden_size") or self.config.get("d_model") or 0)

    @property
    def vocab_size(self) -> int:
        return int(self.config.get("vocab_size") or 0)


def read_model_layout(directory: Path) -> ModelLayout:
    directory = Path(directory)
    modules = _read_json(directory / "modules.json") if (directory / "modules.json").exists() else None
    transformer_dir, pooling_dir, normalize = _interpret_modules(directory, modules)

    config_path = transformer_dir / "config.json"
    if not config_path.exists():
        raise ModelLayoutError(f"{transformer_dir} has no config.json, so it is not a transformers model")
    config = _read_json(config_path)
    if not any((transformer_dir / name).exists() for name in WEIGHT_FILES):
        raise ModelLayoutError(
            f"{transformer_dir} has no weights (expected one of {', '.join(WEIGHT_FILES)})"
        )

    tokenizer_file = _find_tokenizer(transformer_dir, directory)
    pooling_modes = _read_pooling_modes(pooling_dir) if pooling_dir else ("mean",)
    max_seq_len = _read_max_seq_len(directory, transformer_dir, config)
    return ModelLayout(transformer_dir, config, tokenizer_file, pooling_modes, normalize, max_seq_len)


def _interpret_modules(directory: Path, modules: Any) -> tuple[Path, Path | None, bool]:
    """Return (transformer dir, pooling config dir or None, normalize) from modules.json."""
    if modules is None:
        # A plain transformers checkpoint: mean pooling and normalization are the embedding defaults.
        return directory, None, True
    if not isinstance(modules, list):
        raise ModelLayoutError(f"{directory / 'modules.json'} must be a JSON list of modules")
    transformer_dir: Path | None = None
    pooling_dir: Path | None = None
    normalize = False
    for module in modules:
        kind = str(module.get("type", "")).removeprefix(_ST_PREFIX)
        if kind not in _SUPPORTED_MODULES:
            raise ModelLayoutError(
                f"modules.json lists module type {module.get('type')!r}; supported: "
                + ", ".join(sorted(_SUPPORTED_MODULES))
            )
        path = directory / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = path
        elif kind == "Pooling":
            pooling_dir = path
        else:
            normalize = True
    if transformer_dir is None:
        raise ModelLayoutError(f"{directory / 'modules.json'} has no Transformer module")
    return transformer_dir, pooling_dir, normalize


def _find_tokenizer(transformer_dir: Path, directory: Path) -> Path | None:
    for folder in (transformer_dir, directory):
        if (folder / "tokenizer.json").exists():
            return folder / "tokenizer.json"
    if any((transformer_dir / name).exists() for name in VOCAB_FILES):
        return None
    raise ModelLayoutError(
        f"{transformer_dir} has no tokenizer (expected tokenizer.json or one of {', '.join(VOCAB_FILES)})"
    )


def _read_pooling_modes(pooling_dir: Path) -> tuple[str, ...]:
    config_path = pooling_dir / "config.json"
    if not config_path.exists():
        return ("mean",)
    config = _read_json(config_path)
    declared = config.get("pooling_mode")  # newer sentence-transformers: a mode name or a list of them
    if declared:
        modes = (declared,) if isinstance(declared, str) else tuple(declared)
    else:
        modes = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key, False))
    if not modes:
        raise ModelLayoutError(f"{config_path} enables no pooling mode")
    for mode in modes:
        if mode not in POOLING_MODES:
            raise ModelLayoutError(
                f"{config_path}: pooling mode {mode!r} is not supported (supported: {', '.join(POOLING_MODES)})"
            )
    return modes


def _read_max_seq_len(directory: Path, transformer_dir: Path, config: dict[str, Any]) -> int:
    positions = int(config.get("max_position_embeddings") or _DEFAULT_MAX_SEQ_LEN)
    for folder in (directory, transformer_dir):
        st_config = folder / "sentence_bert_config.json"
        if st_config.exists():
            declared = _read_json(st_config).get("max_seq_length")
            if declared:
                return min(int(declared), positions)
    return positions


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLayoutError(f"cannot read {path}: {exc}") from exc
