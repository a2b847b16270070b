"""The embedded platform must not load the Kubernetes client until a Kubernetes cluster is used.

Importing the client costs about half a second of every `kgpu up`, and a machine that only serves
models locally (the GPU benchmark machine among them) need not have the package at all.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from kgpu.backends.kubernetes import cluster


def _loaded_kubernetes_modules(code: str) -> list[str]:
    probe = code + "\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return eval(result.stdout.strip().splitlines()[-1])


def test_embedded_platform_serves_its_api_without_loading_the_kubernetes_client(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from kgpu.cli.main import app  # the `kgpu` command, `up` included
        from kgpu.controlplane.platform import Platform, PlatformConfig
        from kgpu.controlplane.server import create_server_app

        platform = Platform(PlatformConfig(state_dir={str(tmp_path)!r}))
        with TestClient(create_server_app(platform)) as api:
            assert api.get("/apis/kgpu.dev/v1alpha1/namespaces/default/inferenceservices").status_code == 200
        """
    )
    assert _loaded_kubernetes_modules(code) == []


def test_cluster_backend_still_recognises_the_clients_api_errors():
    from kubernetes.client.exceptions import ApiException

    error = ApiException(status=409, reason="Conflict")
    error.body = '{"message": "object is being deleted"}'
    assert cluster._describe(error) == "409 Conflict: object is being deleted"
    assert cluster._describe(ValueError("bad")) == "ValueError: bad"


def test_errors_are_described_even_without_the_kubernetes_client(monkeypatch):
    # A None entry in sys.modules makes the import fail, as on a machine without the package.
    monkeypatch.setitem(sys.modules, "kubernetes.client.exceptions", None)
    assert cluster._describe(ConnectionError("no route")) == "ConnectionError: no route"
