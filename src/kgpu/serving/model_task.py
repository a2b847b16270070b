"""Which task a model serves (text generation or embeddings), decided in one place for the replica and the
control plane alike, so a service's status names the endpoints its replicas actually answer on.

Read from the model directory's layout only (`modules.json`, `config.json`'s architectures): no model code is
imported or run.
"""

from __future__ import annotations

from pathlib import Path

from kgpu.serving.model_layout import read_model_layout
from kgpu.serving.model_source import locate_model

_CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def model_task(directory: Path) -> str:
    """'generation' for a causal language model directory, 'embedding' for anything else (sentence-transformers
    layouts and encoders)."""
    if (directory / "modules.json").exists():
        return "embedding"
    layout = read_model_layout(directory)
    architectures = layout.config.get("architectures") or []
    return "generation" if any(str(a).endswith(_CAUSAL_LM_SUFFIXES) for a in architectures) else "embedding"


def served_task(task: str, model_uri: str) -> str:
    """The task as stated (`spec.model.task`, `--task`), else read from the model directory. A directory that
    cannot be read here counts as embeddings: a replica then reports the load error from the embedding runtime,
    as it always has. The layout is read once (the control plane asks on every status it renders)."""
    if task != "auto":
        return task
    if not model_uri.strip():  # not the working directory
        return "embedding"
    try:
        return model_task(locate_model(model_uri))
    except (ValueError, OSError):  # not a model here (ModelSourceError, ModelLayoutError) or unreadable
        return "embedding"
