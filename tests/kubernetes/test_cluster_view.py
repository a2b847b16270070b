"""Nodes and pods as the kgpu scheduler reads them: GPU capacity from the device plugin, requests from pods."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kgpu.backends.kubernetes.cluster_view import (
    node_facts,
    node_object,
    pod_object,
    pod_request,
    replicas_from_device_plugin_config,
)
from kgpu.backends.kubernetes.nodepool import device_plugin_config, render_device_plugin_configmap
from kgpu.backends.kubernetes.workload import render_deployment
from kgpu.scheduling.requests import PodRequest
from kgpu.scheduling.snapshot import NodeSpec
from tests.kubernetes._matrix import pool, service


def node(allocatable: dict, labels: dict | None = None, ready: str = "True", **spec) -> dict:
    return {
        "metadata": {"name": "n1", "labels": labels or {}},
        "spec": spec,
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", **allocatable},
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


def test_whole_gpus_come_from_the_device_plugins_resource_and_the_model_from_gfd():
    facts = node_facts(node({"nvidia.com/gpu": "8"}, {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}))
    assert (facts.spec.gpu_count, facts.spec.gpu_model, facts.spec.sharing) == (8, "H100-80GB", "exclusive")
    assert (facts.spec.cpu_milli, facts.spec.memory_mib) == (64_000, 512 * 1024)


def test_time_slices_come_from_gfd_replicas_or_from_the_device_plugin_config_the_node_selects():
    labelled = node_facts(
        node(
            {"nvidia.com/gpu.shared": "8"},
            {"kgpu.dev/gpu-model": "L4", "nvidia.com/gpu.count": "2", "nvidia.com/gpu.replicas": "4"},
        )
    )
    assert (labelled.spec.sharing, labelled.spec.gpu_count, labelled.spec.time_slice_replicas) == (
        "time-slicing",
        2,
        4,
    )
    shared = pool("l4", "L4", 1, sharing={"mode": "time-slicing", "replicas": 4})
    data = render_device_plugin_configmap([shared])["data"]
    replicas = replicas_from_device_plugin_config(data)
    assert replicas == {
        "kgpu-default-l4": device_plugin_config(shared)["sharing"]["timeSlicing"]["resources"][0]["replicas"]
    }
    selected = node_facts(
        node(
            {"nvidia.com/gpu.shared": "4"},
            {"kgpu.dev/gpu-model": "L4", "nvidia.com/device-plugin.config": "kgpu-default-l4"},
        ),
        replicas,
    )
    assert (selected.spec.sharing, selected.spec.gpu_count, selected.spec.time_slice_replicas) == (
        "time-slicing",
        1,
        4,
    )


def test_mig_devices_make_a_mig_node_and_are_counted_resources():
    facts = node_facts(
        node(
            {"nvidia.com/mig-3g.40gb": "4"}, {"kgpu.dev/gpu-model": "H100-80GB", "nvidia.com/gpu.count": "2"}
        )
    )
    assert (facts.spec.sharing, facts.spec.gpu_count) == ("mig", 2)
    assert facts.extended == {"nvidia.com/mig-3g.40gb": 4}


def test_cordoned_or_not_ready_nodes_take_no_pods():
    assert not node_facts(node({}, unschedulable=True)).schedulable
    facts = node_facts(node({}, ready="False"))
    assert not facts.schedulable and facts.not_ready


def test_a_model_the_catalog_lacks_still_counts_its_gpus():
    facts = node_facts(
        node(
            {"nvidia.com/gpu": "4"},
            {"nvidia.com/gpu.product": "NVIDIA-Future-GPU", "nvidia.com/gpu.memory": "98304"},
        )
    )
    assert (
        facts.spec.gpu_count == 4
        and facts.spec.model_spec is not None
        and facts.spec.model_spec.memory_gib == 96
    )


requests = st.one_of(
    st.builds(PodRequest, st.integers(0, 64_000), st.integers(0, 500_000)),
    st.builds(
        lambda c, m, n: PodRequest(c, m, gpu_count=n, gpu_milli=1000),
        st.integers(0, 64_000),
        st.integers(0, 10**6),
        st.integers(1, 8),
    ),
    st.builds(
        lambda c, g, models: PodRequest(c, 0, gpu_count=1, gpu_milli=g, gpu_models=models),
        st.integers(0, 8000),
        st.integers(1, 999),
        st.sampled_from([(), ("T4",), ("V100M16", "V100M32")]),
    ),
    st.builds(lambda c: PodRequest(c, 0, time_slice=True), st.integers(0, 8000)),
    st.builds(lambda p: PodRequest(0, 0, mig_profile=p), st.sampled_from(["1g.10gb", "3g.40gb"])),
)


@given(requests)
def test_a_pod_made_from_a_request_reads_back_as_the_same_request(request):
    assert pod_request(pod_object(request, "p")) == request


@given(st.integers(1, 8), st.sampled_from(["T4", "V100M16", "G2"]), st.integers(1000, 128_000))
def test_a_node_made_from_a_spec_reads_back_as_the_same_spec(gpus, model, cpu):
    spec = NodeSpec("n", cpu, 262_144, gpus, model)
    assert node_facts(node_object(spec)).spec == NodeSpec(
        "n", cpu, 262_144, gpus, model, labels=node_object(spec)["metadata"]["labels"]
    )


def test_replicas_of_kgpu_services_are_placed_by_the_kgpu_scheduler_unless_a_service_opts_out():
    isvc = service("minilm", {"nvidia.com/gpu": 1})
    assert render_deployment(isvc, 1)["spec"]["template"]["spec"]["schedulerName"] == "kgpu"
    isvc.metadata.annotations["kgpu.dev/scheduler-name"] = "default-scheduler"
    assert render_deployment(isvc, 1)["spec"]["template"]["spec"]["schedulerName"] == "default-scheduler"


def test_a_pod_with_a_gpu_limit_and_a_share_annotation_is_read_by_its_limit():
    pod = pod_object(PodRequest(0, 0, gpu_count=2, gpu_milli=1000), "p")
    pod["metadata"]["annotations"] = {"kgpu.dev/gpu-milli": "500"}
    assert pod_request(pod).gpu_count == 2


@pytest.mark.parametrize("value", ["abc", "-1", "0", "1001"])
def test_a_malformed_share_annotation_is_refused_naming_the_annotation(value):
    pod = pod_object(PodRequest(100, 0), "p")
    pod["metadata"]["annotations"] = {"kgpu.dev/gpu-milli": value}
    with pytest.raises(ValueError, match="annotation kgpu.dev/gpu-milli: must be an integer in 1..1000"):
        pod_request(pod)
