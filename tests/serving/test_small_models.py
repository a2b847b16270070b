"""Shallow copies of the example model (bench/common/model.py) load and compute what sentence-transformers does.

The serving benchmark runs them to show the servers' own overhead; a model with no transformer layers
at all (embeddings and pooling only) once made the replica fail at start-up.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.common import model as small_model
from kgpu.serving.engine import EmbeddingEngine

from .conftest import SAMPLE_TEXTS


@pytest.mark.parametrize("layers", [0, 1])
def test_a_shallow_copy_serves_the_same_embeddings_as_sentence_transformers(
    model_dir, tmp_path, layers
) -> None:
    from sentence_transformers import SentenceTransformer

    out = tmp_path / f"minilm-l{layers}"
    assert small_model.write_small_model(model_dir, out, layers) == 6
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == layers

    engine = EmbeddingEngine(out, device="cpu")
    assert engine.unpadded == (layers > 0)  # no layers: nothing to unpad, the padded forward runs
    ours = engine.embed_texts(SAMPLE_TEXTS)
    reference = SentenceTransformer(str(out), device="cpu").encode(SAMPLE_TEXTS, normalize_embeddings=True)
    cosines = (ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.999, cosines


def test_asking_for_more_layers_than_the_model_has_names_the_limit(model_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="between 0 and 6"):
        small_model.write_small_model(model_dir, tmp_path / "too-deep", 7)
    assert not (tmp_path / "too-deep").exists()
