"""NodePools as Cluster API MachineDeployments or Karpenter NodePools, validated against the schemas in
src/kgpu/backends/kubernetes/schemas (minimal schemas from the projects' documented fields: see
its README), and created, updated and removed by the operator over HTTP against the API double."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest

from bench.common.kube_api_double import ApiServerDouble
from kgpu.backends.kubernetes.__main__ import build_parser, provisioning_settings
from kgpu.backends.kubernetes.operator import KubeApis, Operator
from kgpu.backends.kubernetes.provisioning import (
    ProvisioningSettings,
    provisioning_status,
    render_karpenter_node_pool,
    render_machine_deployment,
)
from tests.kubernetes._matrix import pool

CAPI = ProvisioningSettings(
    provider="cluster-api",
    cluster_name="prod",
    namespace="capi",
    kubernetes_version="v1.31.4",
    infrastructure_api_version="infrastructure.cluster.x-k8s.io/v1beta2",
    infrastructure_kind="AWSMachineTemplate",
)
KARPENTER = ProvisioningSettings(provider="karpenter")


def schema(name: str) -> dict:
    text = resources.files("kgpu.backends.kubernetes").joinpath("schemas", name).read_text()
    return json.loads(text)


MACHINE_DEPLOYMENT = schema("cluster.x-k8s.io_v1beta1_machinedeployment.json")
KARPENTER_NODE_POOL = schema("karpenter.sh_v1_nodepool.json")


def h100_pool(**spec):
    return pool(
        "h100",
        "H100-80GB",
        8,
        minNodes=1,
        maxNodes=4,
        taints=[{"key": "team", "value": "ml", "effect": "NoSchedule"}],
        **spec,
    )


def test_a_pool_becomes_a_machine_deployment_the_cluster_autoscaler_can_scale_from_zero():
    md = render_machine_deployment(h100_pool(), CAPI)
    jsonschema.validate(md, MACHINE_DEPLOYMENT)
    annotations = md["metadata"]["annotations"]
    assert annotations["cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"] == "1"
    assert annotations["cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"] == "4"
    assert annotations["capacity.cluster-autoscaler.kubernetes.io/gpu-type"] == "nvidia.com/gpu"
    assert annotations["capacity.cluster-autoscaler.kubernetes.io/gpu-count"] == "8"
    assert annotations["capacity.cluster-autoscaler.kubernetes.io/cpu"] == "32"
    assert annotations["capacity.cluster-autoscaler.kubernetes.io/memory"] == "262144Mi"
    assert "kgpu.dev/pool=h100" in annotations["capacity.cluster-autoscaler.kubernetes.io/labels"].split(",")
    assert (
        annotations["capacity.cluster-autoscaler.kubernetes.io/taints"]
        == "team=ml:NoSchedule,nvidia.com/gpu=:NoSchedule"
    )
    assert "replicas" not in md["spec"]  # the autoscaler's field
    template = md["spec"]["template"]["spec"]
    assert template["infrastructureRef"] == {
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
        "kind": "AWSMachineTemplate",
        "name": "prod-h100",
    }
    assert (
        md["spec"]["selector"]["matchLabels"].items() <= md["spec"]["template"]["metadata"]["labels"].items()
    )


def test_a_pool_becomes_a_karpenter_node_pool_with_limits_of_max_nodes():
    node_pool = render_karpenter_node_pool(h100_pool(), KARPENTER)
    jsonschema.validate(node_pool, KARPENTER_NODE_POOL)
    assert node_pool["spec"]["limits"] == {"cpu": "128", "memory": "1048576Mi", "nvidia.com/gpu": "32"}
    requirements = {r["key"]: r["values"] for r in node_pool["spec"]["template"]["spec"]["requirements"]}
    assert requirements["karpenter.k8s.aws/instance-gpu-name"] == ["h100"]
    assert requirements["karpenter.k8s.aws/instance-gpu-count"] == ["8"]
    assert node_pool["spec"]["template"]["metadata"]["labels"]["kgpu.dev/pool"] == "h100"
    assert {"key": "nvidia.com/gpu", "effect": "NoSchedule"} in node_pool["spec"]["template"]["spec"][
        "taints"
    ]
    assert "not enforced" in provisioning_status(h100_pool(), KARPENTER)["message"]


@pytest.mark.parametrize(
    "sharing", [{"mode": "time-slicing", "replicas": 4}, {"mode": "mig", "migLayout": {"3g.40gb": 2}}]
)
def test_shared_pools_validate_on_both_paths(sharing):
    p = h100_pool(sharing=sharing)
    jsonschema.validate(render_machine_deployment(p, CAPI), MACHINE_DEPLOYMENT)
    jsonschema.validate(render_karpenter_node_pool(p, KARPENTER), KARPENTER_NODE_POOL)


def test_the_schemas_refuse_what_the_projects_refuse():
    md = render_machine_deployment(h100_pool(), CAPI)
    del md["spec"]["template"]["spec"]["infrastructureRef"]
    with pytest.raises(jsonschema.ValidationError, match="infrastructureRef"):
        jsonschema.validate(md, MACHINE_DEPLOYMENT)
    node_pool = render_karpenter_node_pool(h100_pool(), KARPENTER)
    node_pool["spec"]["disruption"]["consolidationPolicy"] = "WhenUnderutilized"  # v1beta1's name
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(node_pool, KARPENTER_NODE_POOL)
    node_pool = render_karpenter_node_pool(h100_pool(), KARPENTER)
    node_pool["spec"]["template"]["metadata"]["labels"]["kubernetes.io/hostname"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(node_pool, KARPENTER_NODE_POOL)


def test_cluster_api_needs_its_flags_and_says_which():
    with pytest.raises(SystemExit):
        provisioning_settings(
            build_parser().parse_args(["--node-provisioner", "cluster-api", "--capi-cluster", "x"])
        )
    args = build_parser().parse_args(["--node-provisioner", "karpenter", "--karpenter-node-class", "gpu"])
    assert provisioning_settings(args).node_class_name == "gpu"


GV = "kgpu.dev/v1alpha1"
SPEC = {
    "flavor": {"gpuModel": "H100-80GB", "gpuCount": 8, "cpu": "32", "memory": "256Gi"},
    "minNodes": 0,
    "maxNodes": 2,
}


def put_pool(api: ApiServerDouble) -> None:
    body = {
        "apiVersion": GV,
        "kind": "NodePool",
        "metadata": {"name": "h100", "namespace": "default"},
        "spec": SPEC,
    }
    api.put(GV, "nodepools", body)


def delete_pool(api: ApiServerDouble) -> None:
    with api.store.lock:
        del api.store.objects[(GV, "nodepools", "default", "h100")]


def test_min_and_max_nodes_reach_the_autoscaler_and_a_deleted_pool_loses_its_nodes_over_http_against_api_double():
    with ApiServerDouble() as api:
        put_pool(api)
        operator = Operator(KubeApis.from_client(api.client()), provisioning=CAPI)
        status = operator.reconcile_node_pools()["default/h100"]
        assert status["provisioningObject"] == "kgpu-default-h100"
        md = api.read("cluster.x-k8s.io/v1beta1", "machinedeployments", "kgpu-default-h100", "capi")
        assert (
            md["metadata"]["annotations"]["cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"]
            == "2"
        )
        jsonschema.validate(
            {k: v for k, v in md.items() if k != "status"}
            | {"metadata": {k: md["metadata"][k] for k in ("name", "namespace", "labels", "annotations")}},
            MACHINE_DEPLOYMENT,
        )

        api.update(GV, "nodepools", "h100", {"spec": {"maxNodes": 6}}, namespace="default")
        operator.reconcile_node_pools()
        md = api.read("cluster.x-k8s.io/v1beta1", "machinedeployments", "kgpu-default-h100", "capi")
        assert (
            md["metadata"]["annotations"]["cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"]
            == "6"
        )

        delete_pool(api)
        operator.reconcile_node_pools()
        assert api.items("cluster.x-k8s.io/v1beta1", "machinedeployments", "capi") == []


def test_karpenter_node_pools_are_cluster_scoped_and_pruned_over_http_against_api_double():
    with ApiServerDouble() as api:
        put_pool(api)
        operator = Operator(KubeApis.from_client(api.client()), provisioning=KARPENTER)
        operator.reconcile_node_pools()
        (node_pool,) = api.items("karpenter.sh/v1", "nodepools")
        assert node_pool["spec"]["limits"]["nvidia.com/gpu"] == "16"
        delete_pool(api)
        operator.reconcile_node_pools()
        assert api.items("karpenter.sh/v1", "nodepools") == []


def test_a_node_cluster_api_created_gets_its_pools_labels_and_taints_over_http_against_api_double():
    with ApiServerDouble() as api:
        put_pool(api)
        md = render_machine_deployment(h100_pool(), CAPI)
        propagated = {
            k: v
            for k, v in md["spec"]["template"]["metadata"]["labels"].items()
            if k.startswith("node.cluster.x-k8s.io/")
        }
        propagated["node.cluster.x-k8s.io/kgpu-pool"] = "h100"
        api.put(
            "v1", "nodes", {"metadata": {"name": "prod-h100-x1", "labels": propagated}, "spec": {}}, "capi"
        )
        operator = Operator(KubeApis.from_client(api.client()), provisioning=CAPI)
        assert operator.reconcile_node_pools()["default/h100"]["nodes"] == 1
        node = api.read("v1", "nodes", "prod-h100-x1")
        assert node["metadata"]["labels"]["kgpu.dev/pool"] == "h100"
        assert node["metadata"]["labels"]["kgpu.dev/gpu-model"] == "H100-80GB"
        assert {"key": "nvidia.com/gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
        selectors = {kwargs.get("label_selector") for _fn, _key, kwargs in operator.watches()}
        assert {"kgpu.dev/pool", "node.cluster.x-k8s.io/kgpu-pool"} <= selectors
