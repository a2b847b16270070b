"""`kgpu cluster add NAME --kubeconfig FILE [--context C]` against a real control plane."""

from __future__ import annotations

from pathlib import Path

import yaml

from kgpu.cli.client import KgpuClient
from tests.cli.test_cli import run, server  # noqa: F401  (the control-plane fixture)


def write_kubeconfig(path: Path, current: str | None = "staging") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c1", "cluster": {"server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True}},
            {"name": "c2", "cluster": {"server": "https://10.0.0.2:6443", "insecure-skip-tls-verify": True}},
        ],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [
            {"name": "staging", "context": {"cluster": "c1", "user": "u"}},
            {"name": "prod", "context": {"cluster": "c2", "user": "u"}},
        ],
    }
    if current:
        config["current-context"] = current
    path.write_text(yaml.safe_dump(config))
    return path


def test_cluster_add_registers_a_kubernetes_cluster_with_the_chosen_context(server, tmp_path):  # noqa: F811
    url, _platform = server
    kubeconfig = write_kubeconfig(tmp_path / "config")
    out = run(["cluster", "add", "gpu-prod", "--kubeconfig", str(kubeconfig), "--context", "prod"], url)
    assert out.exit_code == 0, out.output
    assert "cluster/gpu-prod created (context prod)" in out.output
    stored = KgpuClient(url).get("clusters", "default", "gpu-prod")
    assert stored["spec"]["backend"] == "kubernetes" and stored["spec"]["kubeContext"] == "prod"
    # The kubeconfig went to the server as a secret: the Cluster names it, not a file.
    assert stored["spec"]["kubeconfigSecret"] == "gpu-prod" and "kubeconfig" not in stored["spec"]
    assert _platform.kubeconfigs.get("default", "gpu-prod") == kubeconfig.read_text()

    out = run(["cluster", "add", "gpu-prod", "--kubeconfig", str(kubeconfig)], url)
    assert "cluster/gpu-prod configured (context staging)" in out.output  # the file's current-context
    assert KgpuClient(url).get("clusters", "default", "gpu-prod")["spec"]["kubeContext"] == "staging"


def test_cluster_add_explains_a_bad_kubeconfig_before_calling_the_server(tmp_path):
    unreachable = "http://127.0.0.1:9"  # never contacted: every case fails locally
    out = run(["cluster", "add", "x", "--kubeconfig", str(tmp_path / "missing")], unreachable)
    assert out.exit_code == 1 and "--kubeconfig" in out.output and "no such file" in out.output

    kubeconfig = write_kubeconfig(tmp_path / "config")
    out = run(["cluster", "add", "x", "--kubeconfig", str(kubeconfig), "--context", "dev"], unreachable)
    assert out.exit_code == 1
    assert '--context: "dev" is not in' in out.output and "staging, prod" in out.output

    no_current = write_kubeconfig(tmp_path / "nocurrent", current=None)
    out = run(["cluster", "add", "x", "--kubeconfig", str(no_current)], unreachable)
    assert out.exit_code == 1 and "no current-context; pass --context" in out.output

    broken = yaml.safe_load(kubeconfig.read_text())
    broken["contexts"].append({"name": "orphan", "context": {"cluster": "gone", "user": "u"}})
    (tmp_path / "broken").write_text(yaml.safe_dump(broken))
    out = run(
        ["cluster", "add", "x", "--kubeconfig", str(tmp_path / "broken"), "--context", "orphan"], unreachable
    )
    assert out.exit_code == 1 and '--context: "orphan"' in out.output and "cannot be used" in out.output

    garbage = tmp_path / "garbage"
    garbage.write_text("this: is: not: yaml: [")
    out = run(["cluster", "add", "x", "--kubeconfig", str(garbage)], unreachable)
    assert out.exit_code == 1 and "--kubeconfig" in out.output

    out = run(["cluster", "add", "Bad_Name", "--kubeconfig", str(kubeconfig)], unreachable)
    assert out.exit_code == 1 and "metadata.name" in out.output


def test_cluster_add_explains_malformed_kubeconfig_fields(tmp_path):
    # The kubernetes client raises plain ValueError/TypeError for these: once a traceback.
    unreachable = "http://127.0.0.1:9"
    config = yaml.safe_load(write_kubeconfig(tmp_path / "config").read_text())
    bad_ca = yaml.safe_load(yaml.safe_dump(config))
    bad_ca["clusters"][0]["cluster"]["certificate-authority-data"] = "!!!notbase64"
    not_lists = yaml.safe_load(yaml.safe_dump(config))
    not_lists["clusters"] = 7
    for name, broken in (("bad-ca", bad_ca), ("not-lists", not_lists)):
        (tmp_path / name).write_text(yaml.safe_dump(broken))
        out = run(["cluster", "add", "x", "--kubeconfig", str(tmp_path / name)], unreachable)
        assert out.exit_code == 1 and isinstance(out.exception, SystemExit), (name, out.exception)
        assert '--context: "staging"' in out.output and "cannot be used" in out.output, out.output
