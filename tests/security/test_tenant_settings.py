"""Under `--auth`, a project's admin cannot probe the server's files or take over where services run.

Probes: `Cluster.spec.kubeconfig` took any server path from any project admin and its errors told
which files exist, and a Cluster silently moved a namespace's services; a model path's errors told
whether a server path exists.
"""

from __future__ import annotations

from kgpu.api.io import parse_resource
from kgpu.api.models import Cluster, InferenceService
from kgpu.backends.kubernetes.cluster import KubernetesBackend
from kgpu.controlplane.cluster_offers import allowed_clusters
from kgpu.controlplane.registry import connect_stored, stored_clusters
from tests.controlplane.test_api import service
from tests.controlplane.test_auth import API, bearer, services_path, shared

assert shared  # fixture: a server with auth, projects team-a and team-b

CLUSTER = {
    "apiVersion": "kgpu.dev/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "prod"},
    "spec": {"backend": "kubernetes", "kubeconfig": "/etc/shadow"},
}


def test_only_the_cluster_admin_registers_kubernetes_clusters(shared):
    a = bearer(shared.tokens["a"])
    path = f"{API}/namespaces/team-a/clusters/prod"
    refused = shared.put(path, json=CLUSTER, headers=a)
    assert refused.status_code == 422
    assert refused.json()["error"]["fields"] == [
        {
            "path": "spec.backend",
            "message": "Forbidden: only the cluster-admin token registers Kubernetes clusters",
        }
    ]
    assert shared.get(path, headers=a).status_code == 404  # nothing was stored
    sim = {**CLUSTER, "spec": {"backend": "sim"}}
    assert shared.put(path, json=sim, headers=a).status_code == 201  # virtual nodes: nothing to reach
    to_kube = shared.patch(
        path,
        content='{"spec": {"backend": "kubernetes"}}',
        headers={**a, "content-type": "application/merge-patch+json"},
    )
    assert to_kube.status_code == 422
    assert shared.put(path, json=CLUSTER, headers=bearer(shared.admin)).status_code == 200


def test_model_paths_are_a_project_setting_and_their_errors_say_nothing_about_files(shared, tmp_path):
    a = bearer(shared.tokens["a"])
    (tmp_path / "exists").mkdir()
    answers = []
    for uri in (str(tmp_path / "exists"), str(tmp_path / "missing"), f"file://{tmp_path}/exists"):
        response = shared.put(services_path("team-a", "m"), json=service("m", model={"uri": uri}), headers=a)
        assert response.status_code == 422
        answers.append(response.json()["error"]["fields"][0]["message"])
    assert len(set(answers)) == 1 and "may not use model paths on the server" in answers[0]
    assert str(tmp_path) not in answers[0]
    # A package still works; the cluster admin may allow paths for a project.
    ok = shared.put(services_path("team-a", "m"), json=service("m"), headers=a)
    assert ok.status_code == 201
    allowed = shared.patch(
        f"{API}/projects/team-a", json={"gpuQuota": 4, "localModelPaths": True}, headers=bearer(shared.admin)
    )
    assert allowed.json()["localModelPaths"] is True
    missing = shared.put(
        services_path("team-a", "m2"), json=service("m2", model={"uri": str(tmp_path / "missing")}), headers=a
    )
    assert "does not exist" in missing.text


async def test_a_clusters_unloadable_kubeconfig_is_reported_without_the_reason():
    """The reason (which would say whether /etc/shadow exists) goes to the server's log only."""

    def connect(cluster):
        raise FileNotFoundError(2, "No such file or directory", "/etc/shadow-not-here")

    backend = KubernetesBackend(connect)
    cluster = Cluster.model_validate({**CLUSTER, "metadata": {"name": "prod", "namespace": "team-a"}})
    svc = parse_resource({**service("m"), "metadata": {"name": "m", "namespace": "team-a"}})
    await backend.ensure_on(cluster, svc, 1)
    message = backend.service_report("team-a/m", 1)["conditions"][0]["message"]
    assert "cannot load its kubeconfig" in message and "shadow" not in message
    heartbeat = await backend.probe(cluster)  # what the Cluster's status shows of a missed heartbeat
    assert heartbeat is not None
    assert "cannot load its kubeconfig" in heartbeat and "shadow" not in heartbeat


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- {name: c1, cluster: {server: "https://10.0.0.1:6443", insecure-skip-tls-verify: true}}
users:
- {name: u, user: {token: not-a-real-token}}
contexts:
- {name: prod, context: {cluster: c1, user: u}}
current-context: prod
"""


def test_kubeconfigs_are_stored_as_secrets_by_the_cluster_admin_and_never_read_back(shared):
    path = f"{API}/namespaces/team-a/kubeconfigs/prod"
    body = {"kubeconfig": KUBECONFIG}
    assert shared.put(path, json=body, headers=bearer(shared.tokens["a"])).status_code == 403
    admin = bearer(shared.admin)
    assert shared.put(path, json=body, headers=admin).status_code == 201
    listed = shared.get(f"{API}/namespaces/team-a/kubeconfigs", headers=admin).json()["items"]
    assert [item["name"] for item in listed] == ["prod"] and "not-a-real-token" not in str(listed)
    bad = shared.put(path, json={"kubeconfig": "password: hunter2"}, headers=admin)
    assert bad.status_code == 422 and "hunter2" not in bad.text
    # A Cluster names it; the server connects with its content (no file is read).
    cluster = {
        **CLUSTER,
        "spec": {"backend": "kubernetes", "kubeconfigSecret": "prod", "kubeContext": "prod"},
    }
    assert (
        shared.put(f"{API}/namespaces/team-a/clusters/prod", json=cluster, headers=admin).status_code == 201
    )
    parsed = Cluster.model_validate({**cluster, "metadata": {"name": "prod", "namespace": "team-a"}})
    api = connect_stored(parsed, shared.app.state.platform.kubeconfigs.get)
    assert api.api_client.configuration.host == "https://10.0.0.1:6443"


def test_command_runtimes_run_only_for_projects_allowed_the_servers_files(shared):
    """A command runs as the server's own user: a project without localModelPaths may not start one."""
    b = bearer(shared.tokens["b"])
    runtime = {"kind": "command", "command": ["transformers", "serve"]}
    refused = shared.put(services_path("team-b", "cmd"), json=service("cmd", runtime=runtime), headers=b)
    assert refused.status_code == 422
    [field] = refused.json()["error"]["fields"]
    assert field["path"] == "spec.runtime.kind" and "may not run commands on the server" in field["message"]


def test_a_project_admin_cannot_point_the_gateway_elsewhere_through_a_clusters_service_domain(shared):
    """serviceDomain names where the gateway sends a service's requests (bodies and headers): only the
    cluster admin sets it, also on a Kubernetes Cluster the cluster admin registered in the project."""
    a, admin = bearer(shared.tokens["a"]), bearer(shared.admin)
    path = f"{API}/namespaces/team-a/clusters/mesh"
    mesh = {**CLUSTER, "metadata": {"name": "mesh"}, "spec": {"backend": "kubernetes"}}
    assert shared.put(path, json=mesh, headers=admin).status_code == 201
    for body in (
        {**mesh, "spec": {"backend": "kubernetes", "serviceDomain": "attacker.example"}},
        {**mesh, "metadata": {"name": "mesh2"}, "spec": {"backend": "kubernetes", "serviceDomain": "x.io"}},
    ):
        target = f"{API}/namespaces/team-a/clusters/{body['metadata']['name']}"
        assert shared.put(target, json=body, headers=a).status_code == 422
    patched = shared.patch(
        path,
        content='{"spec": {"serviceDomain": "attacker.example"}}',
        headers={**a, "content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 422
    assert "serviceDomain" not in shared.get(path, headers=a).json()["spec"]


def test_a_services_placement_reaches_only_its_own_projects_clusters(shared):
    """A project's service may neither name nor select (by labels) another project's Cluster."""
    a, b = bearer(shared.tokens["a"]), bearer(shared.tokens["b"])
    theirs = {
        **CLUSTER,
        "metadata": {"name": "b-gpus", "labels": {"tier": "gold"}},
        "spec": {"backend": "sim"},
    }
    assert shared.put(f"{API}/namespaces/team-b/clusters/b-gpus", json=theirs, headers=b).status_code == 201
    named = service("svc", placement={"clusters": ["b-gpus"]})
    refused = shared.put(services_path("team-a", "svc"), json=named, headers=a)
    assert refused.status_code == 422
    assert refused.json()["error"]["fields"][0]["path"] == "spec.placement.clusters[0]"
    selected = parse_resource(
        {
            **service("svc", placement={"clusterSelector": {"matchLabels": {"tier": "gold"}}}),
            "metadata": {"name": "svc", "namespace": "team-a"},
        }
    )
    assert isinstance(selected, InferenceService)
    registered = stored_clusters(shared.platform.store)
    assert [c.metadata.name for c in registered] == ["b-gpus"]
    assert allowed_clusters(selected, registered).clusters == []
