"""Which task a model serves, as the replica and the control plane both decide it."""

from __future__ import annotations

import json
from pathlib import Path

from kgpu.serving.model_task import served_task


def test_a_stated_task_wins_and_a_causal_lm_directory_is_read_as_generation(tiny_llm_dir: Path) -> None:
    assert served_task("embedding", str(tiny_llm_dir)) == "embedding"
    assert served_task("auto", str(tiny_llm_dir)) == "generation"
    assert served_task("auto", f"file://{tiny_llm_dir}") == "generation"


def test_what_is_not_a_readable_causal_lm_counts_as_embeddings(tmp_path: Path) -> None:
    assert served_task("auto", str(tmp_path / "missing")) == "embedding"
    assert served_task("auto", "") == "embedding"
    (tmp_path / "file").write_text("x")
    assert served_task("auto", str(tmp_path / "file")) == "embedding"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert served_task("auto", str(broken)) == "embedding"
    sentence = tmp_path / "st"
    sentence.mkdir()
    (sentence / "modules.json").write_text(json.dumps([]))
    assert served_task("auto", str(sentence)) == "embedding"
