"""charts/kgpu: templates render (Python renderer for Helm's template subset), validate, and grant least privilege."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.common.kube_api_double import ApiError, ApiServerDouble, parse_route
from kgpu.api.crds import all_crds
from kgpu.api.io import parse_resource
from kgpu.backends.kubernetes.__main__ import build_parser
from kgpu.backends.kubernetes.operator import KubeApis, Operator
from kgpu.controlplane.in_cluster import build_parser as gateway_parser
from tests.kubernetes import test_operator as op
from tests.kubernetes.helm_render import TemplateError, render_chart, render_template
from tests.kubernetes.test_leader_election import lease_calls
from tests.kubernetes.test_manifests_validate import validate_everywhere

CHART = Path(__file__).resolve().parents[2] / "charts" / "kgpu"


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_chart_templates_render_and_validate_against_kubernetes_schemas():
    objects = render_chart(CHART)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    for manifest in objects:
        validate_everywhere(manifest)


def test_chart_crds_are_the_generated_crds():
    documents = [
        d for f in sorted((CHART / "crds").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())
    ]
    assert documents == all_crds(), "regenerate with: kgpu crds > charts/kgpu/crds/kgpu.dev_crds.yaml"


def test_values_reach_the_operator_and_the_gateway_can_be_left_out():
    objects = by_kind(
        render_chart(
            CHART,
            release="prod",
            namespace="ml-platform",
            values={
                "operator": {"runtimeImage": "r.example/rt:9"},
                "gpuOperator": {"namespace": "nvidia-gpu-operator"},
            },
        )
    )
    operator = objects[("Deployment", "prod-operator")]
    assert operator["metadata"]["namespace"] == "ml-platform"
    container = operator["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])  # the operator accepts what the chart passes
    assert (args.runtime_image, args.gpu_operator_namespace, args.drain_timeout) == (
        "r.example/rt:9",
        "nvidia-gpu-operator",
        30,
    )
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert objects[("Role", "prod-operator-gpu-configs")]["metadata"]["namespace"] == "nvidia-gpu-operator"
    gateway = objects[("Deployment", "prod-gateway")]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["command"] == ["python", "-m", "kgpu.controlplane.in_cluster"]
    assert gateway_parser().parse_args(gateway["args"]).port == gateway["ports"][0]["containerPort"]
    without_gateway = render_chart(CHART, values={"gateway": {"enabled": False}})
    assert not [
        o for o in without_gateway if "gateway" in o["metadata"]["name"] and o["kind"] != "ServiceAccount"
    ]


def _resource_of(method: str) -> str:
    core = re.sub(r"^(read|get|list|create|patch)_(namespaced_)?", "", method)
    core = core.removesuffix("_for_all_namespaces")
    return core.replace("_", "") + "s"


HTTP_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def requested(
    api: ApiServerDouble, namespaced: tuple[str, ...] = ("configmaps",)
) -> set[tuple[str, str, str, str | None]]:
    """(apiGroup, resource, verb, namespace) of every request the double answered, as RBAC sees them.

    A server-side apply that created its object was authorized as ``create`` too; the namespace is
    kept only for the resources a namespaced Role grants."""
    calls: set[tuple[str, str, str, str | None]] = set()
    for request in api.store.requests:
        route = parse_route(request.path)
        resource = f"{route.plural}/{route.subresource}" if route.subresource else route.plural
        if request.method == "GET":
            verb = "watch" if request.query.get("watch") == "true" else "get" if route.name else "list"
        else:
            verb = HTTP_VERBS[request.method]
        namespace = route.namespace if route.plural in namespaced else None
        calls.add((route.group, resource, verb, namespace))
        if verb == "patch" and request.code == 201:
            calls.add((route.group, resource, "create", namespace))
    return calls


def operator_calls() -> set[tuple[str, str, str, str | None]]:
    """(apiGroup, resource, verb, namespace) of every call the operator makes in a full round of work,
    through the real client against the API server double."""
    with ApiServerDouble() as api:
        api.put(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            {
                "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
                "spec": {
                    "group": "monitoring.coreos.com",
                    "names": {"kind": "ServiceMonitor", "plural": "servicemonitors"},
                    "scope": "Namespaced",
                    "versions": [{"name": "v1", "served": True, "storage": True}],
                },
            },
        )
        api.put("kgpu.dev/v1alpha1", "inferenceservices", op.stored_service(op.GPU_SPEC))
        ts_spec = {
            "flavor": {"gpuModel": "L4", "gpuCount": 1},
            "sharing": {"mode": "time-slicing", "replicas": 4},
        }
        api.put("kgpu.dev/v1alpha1", "nodepools", op.stored_pool("l4", ts_spec))
        api.put("v1", "nodes", {"metadata": {"name": "n1", "labels": {"kgpu.dev/pool": "l4"}}})
        api.put(
            "v1",
            "pods",
            {
                "metadata": {"name": "minilm-b", "namespace": "ml", "labels": {"kgpu.dev/service": "minilm"}},
                "status": {"phase": "Pending"},
            },
        )
        operator = Operator(
            KubeApis.from_client(api.client()), op.SETTINGS, gpu_operator_namespace="gpu-operator"
        )
        # A node whose taints changed meanwhile: the operator reads it again.
        api.store.fail_next.append(("PATCH", "/nodes/n1", ApiError(409, "Conflict", "modified")))
        for _ in range(2):  # first round creates, second updates
            operator.reconcile_service("ml", "minilm")
            operator.reconcile_node_pools()
        operator.scale_service("ml", "minilm", 3)
        calls = requested(api)
    for list_fn, _key, kwargs in operator.watches():
        if "plural" in kwargs:
            group, resource = kwargs["group"], kwargs["plural"]
        else:
            owner = "apps" if "deployment" in list_fn.__name__ else ""
            group, resource = owner, _resource_of(list_fn.__name__)
        calls |= {(group, resource, "list", None), (group, resource, "watch", None)}
    return calls


def granted(objects: list[dict[str, Any]], account: str) -> set[tuple[str, str, str, str | None]]:
    """What the chart's (Cluster)Roles bound to one service account allow."""
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"])
        for b in objects
        if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(s["name"] == account for s in b["subjects"])
    }
    grants = set()
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "Role") or (obj["kind"], obj["metadata"]["name"]) not in bound:
            continue
        namespace = obj["metadata"].get("namespace") if obj["kind"] == "Role" else None
        for rule in obj["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        grants.add((group, resource, verb, namespace))
    return grants


def test_operator_rbac_grants_exactly_what_the_operator_calls_against_client_api_surface():
    calls = operator_calls()
    assert ("apps", "deployments", "create", None) in calls and ("", "nodes", "patch", None) in calls
    calls |= lease_calls("kgpu-system")  # leader election, in the release namespace
    objects = render_chart(CHART, values={"gpuOperator": {"namespace": "gpu-operator"}})
    assert granted(objects, "kgpu-operator") == calls


def test_operator_replicas_elect_a_leader_on_the_lease_their_role_names():
    objects = by_kind(
        render_chart(CHART, namespace="ml-platform", values={"operator": {"leaderElectionId": "kgpu-x"}})
    )
    deployment = objects[("Deployment", "kgpu-operator")]
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert (args.leader_elect, args.leader_election_namespace, args.leader_election_id) == (
        True,
        "ml-platform",
        "kgpu-x",
    )
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    role = objects[("Role", "kgpu-operator-leader-election")]
    assert role["metadata"]["namespace"] == "ml-platform"
    # create cannot be limited by name; reading and renewing are limited to the one Lease.
    assert {tuple(r["verbs"]): r.get("resourceNames") for r in role["rules"]} == {
        ("create",): None,
        ("get", "update"): ["kgpu-x"],
    }


CUSTOM_VERBS = {
    "get": "get",
    "list": "list",
    "create": "create",
    "replace": "update",
    "patch": "patch",
    "delete": "delete",
}


def gateway_calls() -> set[tuple[str, str, str, str | None]]:
    """(apiGroup, resource, verb, None) of every call the in-cluster gateway's kubernetes backend makes:
    create, replace, scale and delete a service and a pool, and list its own after a restart."""
    import asyncio
    import copy

    from kgpu.backends.kubernetes.cluster import KubernetesBackend
    from kgpu.controlplane.registry import IN_CLUSTER
    from tests.kubernetes import test_controlplane_cluster as cp

    server = cp.FakeApiServer()
    backend = KubernetesBackend(lambda cluster: server.api)
    isvc = parse_resource(copy.deepcopy(cp.SERVICE))
    changed = parse_resource({**cp.SERVICE, "spec": {**cp.SERVICE["spec"], "runtime": {"maxBatchSize": 8}}})
    pool = parse_resource(copy.deepcopy(cp.POOL))

    async def round_of_work() -> None:
        await backend.adopt(IN_CLUSTER)
        await backend.ensure_on(IN_CLUSTER, isvc, 2)
        await backend.ensure_on(IN_CLUSTER, changed, 2)
        await backend.ensure_on(IN_CLUSTER, changed, 3)
        await backend.ensure_pool_on(IN_CLUSTER, pool)
        await backend.ensure_pool_on(
            IN_CLUSTER, parse_resource({**cp.POOL, "spec": {**cp.POOL["spec"], "maxNodes": 9}})
        )
        await backend.remove("ml/minilm")
        await backend.remove_pool("ml/l4-shared")

    asyncio.run(round_of_work())
    assert server.objects == {}
    calls = set()
    for name, args, _kwargs in server.api.method_calls:
        plural = args[2] if name == "list_cluster_custom_object" else args[3]
        suffix = "/scale" if name.endswith("_scale") else ""
        calls.add((args[0], plural + suffix, CUSTOM_VERBS[name.split("_", 1)[0]], None))
    return calls


def test_gateway_rbac_grants_exactly_what_its_kubernetes_backend_calls_against_client_api_surface():
    calls = gateway_calls()
    assert ("kgpu.dev", "inferenceservices/scale", "patch", None) in calls
    assert ("kgpu.dev", "nodepools", "update", None) in calls
    assert granted(render_chart(CHART), "kgpu-gateway") == calls


def test_the_chart_gateway_runs_services_on_its_cluster_and_routes_by_cluster_dns():
    from kgpu.controlplane.in_cluster import platform_config

    gateway = by_kind(render_chart(CHART, values={"gateway": {"clusterDomain": "corp.internal"}}))
    container = gateway[("Deployment", "kgpu-gateway")]["spec"]["template"]["spec"]["containers"][0]
    config = platform_config(container["args"], environ={})
    assert config.in_cluster and config.cluster_domain == "corp.internal"
    assert not platform_config(["--port", "8000"], environ={}).in_cluster  # kgpu up on a laptop
    assert platform_config(["--port", "8000"], environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).in_cluster


def test_rbac_has_no_wildcards_and_no_secrets():
    for obj in render_chart(CHART):
        for rule in obj.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert "secrets" not in rule["resources"]


def test_template_renderer_trims_indents_and_refuses_what_it_does_not_know():
    scope = {"Values": {"on": True, "off": False, "r": {"cpu": "1", "memory": "2Gi"}, "n": 3}}
    text = "a:\n  {{- if .Values.on }}\n  b: {{ .Values.n | quote }}\n  {{- end }}\n  {{- if .Values.off }}\n  c: 1\n  {{- end }}\nr:\n  {{- toYaml .Values.r | nindent 2 }}\n"
    assert yaml.safe_load(render_template(text, scope)) == {
        "a": {"b": "3"},
        "r": {"cpu": "1", "memory": "2Gi"},
    }
    with pytest.raises(TemplateError, match="no value"):
        render_template("{{ .Values.missing }}", scope)
    with pytest.raises(TemplateError, match="unsupported function"):
        render_template("{{ .Values.n | upper }}", scope)
    with pytest.raises(TemplateError, match="if without end"):
        render_template("{{ if .Values.on }}x", scope)


def scheduler_calls() -> set[tuple[str, str, str, str | None]]:
    """(apiGroup, resource, verb, namespace) of every call the kgpu scheduler makes: its watches, a
    bind, a pod that fits nowhere (twice: the event is counted up), through the real client."""
    from kubernetes import client as k8s

    from kgpu.backends.kubernetes.cluster_view import node_object, pod_object
    from kgpu.backends.kubernetes.scheduler import KgpuScheduler
    from kgpu.scheduling.requests import PodRequest
    from kgpu.scheduling.snapshot import NodeSpec

    with ApiServerDouble() as api:
        api.put("v1", "nodes", node_object(NodeSpec("n1", 8000, 65536, 1, "L4")))
        for name in ("fits", "too-big"):
            gpus = 1 if name == "fits" else 4
            api.put("v1", "pods", pod_object(PodRequest(100, 0, gpu_count=gpus, gpu_milli=1000), name, "ml"))
        scheduler = KgpuScheduler(
            k8s.CoreV1Api(api.client()), device_plugin_configmap=("gpu-operator", "kgpu-device-plugin-config")
        )
        scheduler.start_watches(watch_timeout_s=5)
        assert scheduler.wait_synced(10)
        decisions = [scheduler.schedule_one(timeout_s=1.0) for _ in range(2)]
        failed = next(d for d in decisions if d.placement is None)
        pod = api.read("v1", "pods", failed.name, "ml")
        scheduler.report_failure(pod, failed.message)
        scheduler.report_failure(pod, failed.message)
        scheduler.report_scheduled(next(d for d in decisions if d.placement is not None))
        scheduler.stop.set()
        api.store.close_watches()
        return requested(api)


def test_scheduler_rbac_grants_exactly_what_the_scheduler_calls_over_http_against_api_double():
    calls = scheduler_calls()
    assert ("", "pods/binding", "create", None) in calls and ("", "events", "patch", None) in calls
    calls |= {(g, r, v, "kgpu-system") for g, r, v, _ in lease_calls("kgpu-system")}
    objects = render_chart(CHART, values={"gpuOperator": {"namespace": "gpu-operator"}})
    assert granted(objects, "kgpu-scheduler") == calls


def test_the_scheduler_deployment_runs_the_scheduler_the_operator_names():
    objects = by_kind(render_chart(CHART, namespace="ml-platform"))
    container = objects[("Deployment", "kgpu-scheduler")]["spec"]["template"]["spec"]["containers"][0]
    from kgpu.backends.kubernetes.scheduler import build_parser as scheduler_parser

    args = scheduler_parser().parse_args(container["args"])
    assert (args.scheduler_name, args.leader_elect, args.leader_election_namespace) == (
        "kgpu",
        True,
        "ml-platform",
    )
    operator = objects[("Deployment", "kgpu-operator")]["spec"]["template"]["spec"]["containers"][0]
    assert build_parser().parse_args(operator["args"]).scheduler_name == args.scheduler_name
    without = by_kind(render_chart(CHART, values={"scheduler": {"enabled": False}}))
    assert ("Deployment", "kgpu-scheduler") not in without
    operator = without[("Deployment", "kgpu-operator")]["spec"]["template"]["spec"]["containers"][0]
    assert build_parser().parse_args(operator["args"]).scheduler_name == ""  # the default scheduler places


def test_node_provisioner_values_reach_the_operator_with_exactly_the_rbac_it_needs():
    from kgpu.backends.kubernetes.__main__ import provisioning_settings
    from kgpu.backends.kubernetes.provisioning import ProvisioningSettings

    capi = {
        "enabled": True,
        "cluster": "prod",
        "namespace": "capi",
        "kubernetesVersion": "v1.31.4",
        "infrastructureApiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
        "infrastructureKind": "AWSMachineTemplate",
    }
    objects = render_chart(CHART, values={"nodeProvisioner": {"clusterApi": capi}})
    operator = by_kind(objects)[("Deployment", "kgpu-operator")]["spec"]["template"]["spec"]["containers"][0]
    settings = provisioning_settings(build_parser().parse_args(operator["args"]))
    assert (settings.provider, settings.cluster_name, settings.namespace) == ("cluster-api", "prod", "capi")
    with ApiServerDouble() as api:
        spec = {"flavor": {"gpuModel": "L4", "gpuCount": 1}, "maxNodes": 2}
        api.put("kgpu.dev/v1alpha1", "nodepools", op.stored_pool("l4", spec))
        api.put("kgpu.dev/v1alpha1", "nodepools", op.stored_pool("gone", spec))
        operator_ = Operator(KubeApis.from_client(api.client()), provisioning=settings)
        operator_.reconcile_node_pools()
        with api.store.lock:
            del api.store.objects[("kgpu.dev/v1alpha1", "nodepools", "default", "gone")]
        operator_.reconcile_node_pools()
        calls = requested(api, namespaced=("configmaps", "machinedeployments"))
    wanted = {c for c in calls if c[0] == "cluster.x-k8s.io"}
    assert {c[2] for c in wanted} == {"list", "create", "patch", "delete"}
    assert {c for c in granted(objects, "kgpu-operator") if c[0] == "cluster.x-k8s.io"} == wanted
    karpenter = render_chart(CHART, values={"nodeProvisioner": {"karpenter": {"enabled": True}}})
    operator = by_kind(karpenter)[("Deployment", "kgpu-operator")]["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert provisioning_settings(build_parser().parse_args(operator["args"])).provider == "karpenter"
    assert {c[1:3] for c in granted(karpenter, "kgpu-operator") if c[0] == "karpenter.sh"} == {
        ("nodepools", v) for v in ("list", "create", "patch", "delete")
    }
    assert ProvisioningSettings().provider == "none"


def test_the_model_cache_claim_reaches_the_operators_flags():
    def operator_args(values: dict) -> list[str]:
        objects = by_kind(render_chart(CHART, values=values))
        return objects[("Deployment", "kgpu-operator")]["spec"]["template"]["spec"]["containers"][0]["args"]

    assert "--model-cache-claim" not in operator_args({})
    args = operator_args({"operator": {"modelCacheClaim": "hf-cache"}})
    assert build_parser().parse_args(args).model_cache_claim == "hf-cache"
