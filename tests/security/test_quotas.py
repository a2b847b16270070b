"""CPU, memory and replica quotas (ResourceQuota semantics), and the machine's own CPU and memory.

Probe: `replicas` went up to 10,000 and quotas counted GPUs only; `replicas: 8` of a CPU service
started 9 processes and 2.3 GB on the machine.
"""

from __future__ import annotations

import pytest

from kgpu.api.io import parse_resource
from kgpu.api.resources import DEFAULT_MEMORY_REQUEST_BYTES
from kgpu.controlplane.quota import HardLimits
from kgpu.gpu.discovery import NodeInventory
from tests.backends.test_local_rollout import backend, no_processes
from tests.controlplane.test_api import service
from tests.controlplane.test_auth import API, bearer, services_path, shared

assert no_processes and shared  # fixtures: stand-in replica processes; a server with auth and projects

HARD = {"requests.cpu": "2", "requests.memory": "1Gi", "count/replicas": 6}


def cpu_service(name: str, replicas: int, cpu: str | None = None, memory: str | None = None, **spec) -> dict:
    requests = {**({"cpu": cpu} if cpu else {}), **({"memory": memory} if memory else {})}
    return service(name, replicas, **({"resources": {"requests": requests}} if requests else {}), **spec)


@pytest.fixture
def limited(shared):
    response = shared.patch(f"{API}/projects/team-b", json={"hard": HARD}, headers=bearer(shared.admin))
    assert response.status_code == 200, response.text
    assert response.json()["hard"] == {"requests.cpu": "2", "requests.memory": "1Gi", "count/replicas": "6"}
    return shared


def _put(client, name: str, body: dict):
    return client.put(services_path("team-b", name), json=body, headers=bearer(client.tokens["b"]))


def test_replica_count_quota(limited):
    refused = _put(limited, "many", cpu_service("many", 7, cpu="100m", memory="10Mi"))
    assert refused.status_code == 422
    assert refused.json()["error"]["fields"][0] == {
        "path": "spec.replicas",
        "message": 'exceeds project "team-b" quota count/replicas: 7 requested + 0 in use > 6',
    }
    assert _put(limited, "many", cpu_service("many", 6, cpu="100m", memory="10Mi")).status_code == 201
    autoscaled = cpu_service(
        "more", 1, cpu="100m", memory="10Mi", autoscaling={"minReplicas": 0, "maxReplicas": 1}
    )
    assert "count/replicas: 1 requested + 6 in use > 6" in _put(limited, "more", autoscaled).text


def test_cpu_and_memory_quotas_count_requests_times_replicas(limited):
    refused = _put(limited, "big", cpu_service("big", 3, cpu="750m", memory="100Mi"))
    assert refused.status_code == 422
    assert "quota requests.cpu: 2250m requested + 0 in use > 2" in refused.text
    assert _put(limited, "big", cpu_service("big", 2, cpu="750m", memory="400Mi")).status_code == 201
    refused = _put(limited, "other", cpu_service("other", 1, cpu="250m", memory="300Mi"))
    assert "quota requests.memory: 300Mi requested + 800Mi in use > 1Gi" in refused.text


def test_a_service_declaring_nothing_counts_the_default_request(limited):
    fits = 1024**3 // DEFAULT_MEMORY_REQUEST_BYTES  # 4 replicas of 256Mi
    assert _put(limited, "plain", cpu_service("plain", fits)).status_code == 201
    refused = _put(limited, "plain2", cpu_service("plain2", 1))
    assert refused.status_code == 422 and "requests.memory" in refused.text


def test_quota_changes_are_for_the_cluster_admin_and_bad_limits_name_the_entry(limited):
    b = bearer(limited.tokens["b"])
    assert (
        limited.patch(f"{API}/projects/team-b", json={"hard": {"count/replicas": 99}}, headers=b).status_code
        == 403
    )
    admin = bearer(limited.admin)
    bad = limited.patch(f"{API}/projects/team-b", json={"hard": {"requests.gpu": "1"}}, headers=admin)
    assert bad.status_code == 422 and "hard[requests.gpu]" in bad.text
    bad = limited.patch(f"{API}/projects/team-b", json={"hard": {"requests.cpu": "lots"}}, headers=admin)
    assert bad.status_code == 422 and "hard[requests.cpu]" in bad.text
    # Setting the GPU quota alone leaves the other limits as they were.
    kept = limited.patch(f"{API}/projects/team-b", json={"gpuQuota": 2}, headers=admin).json()
    assert kept == {
        "name": "team-b",
        "gpuQuota": 2,
        "hard": {"requests.cpu": "2", "requests.memory": "1Gi", "count/replicas": "6"},
    }
    created = limited.post(
        f"{API}/projects", json={"name": "team-c", "hard": {"requests.memory": "512Mi"}}, headers=admin
    )
    assert created.json()["hard"] == {"requests.memory": "512Mi"}


def test_hard_limits_read_back_as_written():
    limits, errors = HardLimits.parse(
        {"requests.cpu": "1500m", "requests.memory": "3G", "count/replicas": "10"}
    )
    assert errors == []
    assert limits.to_hard() == {
        "requests.cpu": "1500m",
        "requests.memory": "3000000000",
        "count/replicas": "10",
    }


def _parsed(replicas: int, cpu: str | None = None, memory: str | None = None):
    body = cpu_service("m", replicas, cpu=cpu, memory=memory, runtime={"device": "cpu"})
    return parse_resource(body)


async def test_the_local_backend_leaves_replicas_past_the_machines_cpu_pending():
    machine = NodeInventory(
        hostname="n", cpu_count=2, memory_mib=4096, driver_version=None, gpus=[], note="cpu"
    )
    b = backend(machine)
    await b.ensure(_parsed(3, cpu="1"), 3)
    phases = {r.name: (r.phase, r.message) for r in b.replicas()}
    assert [p for p, _ in phases.values()].count("Pending") == 1
    assert phases["m-2"] == ("Pending", "0/1 nodes are available: 1 Insufficient cpu or memory.")


async def test_the_local_backend_leaves_replicas_past_the_machines_memory_pending():
    machine = NodeInventory(
        hostname="n", cpu_count=64, memory_mib=4096, driver_version=None, gpus=[], note="cpu"
    )
    b = backend(machine)
    await b.ensure(_parsed(8), 8)  # 8 x 256Mi of 4Gi: all fit
    assert all(r.phase != "Pending" for r in b.replicas())
    b = backend(machine)
    await b.ensure(_parsed(3, memory="1500Mi"), 3)
    assert [r.phase for r in b.replicas()].count("Pending") == 1
