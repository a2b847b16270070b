"""hf:// models from a pre-populated model cache, with the network cut: resolved by huggingface_hub with
local files only, loaded and run; a model missing from the cache is a clear error, never a download."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from kgpu.api.io import parse_resource
from kgpu.controlplane.platform import check_model_available
from kgpu.serving.engine import EmbeddingEngine
from kgpu.serving.model_source import MODEL_CACHE_ENV, ModelSourceError, resolve_model_uri

REPO = "sentence-transformers/all-MiniLM-L6-v2"
COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def fill_cache(cache: Path, model_dir: Path) -> Path:
    """The layout `hf download` leaves: refs/main names a commit whose snapshot holds the files."""
    repo = cache / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(model_dir, snapshot)
    return snapshot


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_an_hf_model_loads_from_a_prepopulated_cache_with_the_network_disabled(
    model_dir, tmp_path, monkeypatch, no_network
):
    snapshot = fill_cache(tmp_path / "cache", model_dir)
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "cache"))
    assert resolve_model_uri(f"hf://{REPO}") == snapshot.resolve()
    assert resolve_model_uri(f"hf://{REPO}@{COMMIT}") == snapshot.resolve()
    engine = EmbeddingEngine(resolve_model_uri(f"hf://{REPO}"), device="cpu")
    vectors = engine.embed_texts(["hello from the cache"])
    assert vectors.shape == (1, 384)


def test_a_model_missing_from_the_cache_is_refused_at_apply_time(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "empty"))
    with pytest.raises(ModelSourceError, match="not in the model cache .* and kgpu does not download"):
        resolve_model_uri("hf://org/absent")
    service = parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "absent"},
            "spec": {"model": {"uri": "hf://org/absent@v2"}},
        }
    )
    [error] = check_model_available(service)
    assert error.path == "spec.model.uri" and "hf download org/absent" in error.message
