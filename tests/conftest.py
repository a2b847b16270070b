"""Fixtures every test package may use."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama with a trained byte-level BPE tokenizer and a chat template, written once per run."""
    from kgpu.serving.random_llm import write_random_llm

    return write_random_llm(tmp_path_factory.mktemp("models") / "tiny-chat", "tiny")


@pytest.fixture(autouse=True)
def no_failed_token_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed token checks answer at once in tests (many make them on purpose); the delay itself is
    tested in tests/security/test_token_checks.py."""
    from kgpu import auth_failures

    monkeypatch.setattr(auth_failures, "FAILURE_DELAY_S", 0.0)
