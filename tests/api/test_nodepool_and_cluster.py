from __future__ import annotations

import copy

import pytest

from kgpu.api.io import parse_resource
from kgpu.api.models import Cluster, NodePool
from tests.api._support import POOL, error_lines, pool


def test_exclusive_pool_defaults() -> None:
    np = parse_resource(copy.deepcopy(POOL))
    assert isinstance(np, NodePool)
    assert (np.spec.sharing.mode, np.spec.sharing.replicas, np.spec.sharing.mig_layout) == (
        "exclusive",
        None,
        None,
    )
    assert (np.spec.min_nodes, np.spec.max_nodes, np.spec.taints, np.spec.labels) == (0, 2, [], {})


def test_gpu_model_is_checked_and_normalized_to_the_catalog_spelling() -> None:
    assert (
        parse_resource(pool(flavor={"gpuModel": "h200-141gb", "gpuCount": 8})).spec.flavor.gpu_model
        == "H200-141GB"
    )
    (line,) = error_lines(pool(flavor={"gpuModel": "H300", "gpuCount": 8}))
    assert line.startswith('spec.flavor.gpuModel: Unsupported value: "H300": supported values: "A100-40GB"')


def test_gpu_count_and_model_go_together() -> None:
    assert error_lines(pool(flavor={"gpuModel": "L4"})) == [
        "spec.flavor.gpuCount: Invalid value: 0: must be at least 1 when gpuModel is set"
    ]
    assert error_lines(pool(flavor={"gpuCount": 2})) == [
        "spec.flavor.gpuModel: Required value: gpuCount > 0 needs the GPU model (one of the catalog's names)"
    ]
    cpu_pool = parse_resource(pool(flavor={"cpu": "16", "memory": "64Gi"}))
    assert cpu_pool.spec.flavor.gpu_model is None


def test_flavor_quantities_are_checked() -> None:
    assert error_lines(pool(flavor={"gpuModel": "L4", "gpuCount": 1, "memory": "64GB"})) == [
        'spec.flavor.memory: Invalid value: "64GB": quantities must match the regular expression '
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    ]
    # Infinity passed the syntax check and later broke int() in the pool's status and sim nodes.
    assert error_lines(pool(flavor={"gpuModel": "L4", "gpuCount": 1, "cpu": float("inf")})) == [
        'spec.flavor.cpu: Invalid value: "inf": must be a finite number no larger than 2^63-1 '
        "(9223372036854775807)"
    ]


def test_min_nodes_must_not_exceed_max_nodes() -> None:
    assert error_lines(pool(minNodes=3, maxNodes=2)) == [
        "spec.minNodes: Invalid value: 3: must be less than or equal to maxNodes"
    ]


@pytest.mark.parametrize("mode", ["time-slicing", "mps"])
def test_time_slicing_and_mps_need_at_least_two_replicas(mode: str) -> None:
    assert error_lines(pool(sharing={"mode": mode, "replicas": 1})) == [
        "spec.sharing.replicas: Invalid value: 1: must be greater than or equal to 2"
    ]
    assert error_lines(pool(sharing={"mode": mode})) == [
        f"spec.sharing.replicas: Required value: {mode} needs replicas >= 2 (clients per GPU)"
    ]
    assert parse_resource(pool(sharing={"mode": mode, "replicas": 4})).spec.sharing.replicas == 4
    # Unbounded, 10**30 passed and then failed to store (JSON holds 64-bit ints): a 500.
    assert error_lines(pool(sharing={"mode": mode, "replicas": 10**30})) == [
        f"spec.sharing.replicas: Invalid value: {10**30}: must be less than or equal to 2147483647"
    ]


def test_mig_layout_is_checked_against_the_flavors_gpu() -> None:
    assert error_lines(pool(sharing={"mode": "mig", "migLayout": {"3g.71gb": 2, "1g.18gb": 1}})) == [
        'spec.sharing.migLayout: Invalid value: {"3g.71gb": 2, "1g.18gb": 1}: MIG layout does not fit one '
        "H200-141GB: 3g.71gb at start 0, 3g.71gb at start 4 use memory slices 0-7, leaving no free start for "
        "1g.18gb (it may start at memory slice 0, 1, 2, 3, 4, 5 or 6); the layout needs 9 of 8 memory slices"
    ]
    ok = parse_resource(pool(sharing={"mode": "mig", "migLayout": {"4g.71gb": 1, "3g.71gb": 1}}))
    assert ok.spec.sharing.mig_layout == {"4g.71gb": 1, "3g.71gb": 1}


def test_mig_profile_of_another_gpu_is_refused() -> None:
    (line,) = error_lines(pool(sharing={"mode": "mig", "migLayout": {"3g.40gb": 2}}))
    assert line.startswith(
        "spec.sharing.migLayout: Invalid value: {\"3g.40gb\": 2}: unknown MIG profile '3g.40gb'"
    )


def test_mig_needs_a_layout_and_a_mig_capable_gpu() -> None:
    assert error_lines(pool(sharing={"mode": "mig"})) == [
        'spec.sharing.migLayout: Required value: mig needs a layout of profile counts, e.g. {"1g.18gb": 7}'
    ]
    doc = pool(
        flavor={"gpuModel": "L40S", "gpuCount": 4}, sharing={"mode": "mig", "migLayout": {"1g.18gb": 1}}
    )
    assert error_lines(doc) == ['spec.sharing.mode: Invalid value: "mig": L40S does not support MIG']


def test_sharing_is_nvidia_only_and_needs_a_gpu() -> None:
    doc = pool(flavor={"gpuModel": "MI300X", "gpuCount": 8}, sharing={"mode": "time-slicing", "replicas": 2})
    assert error_lines(doc) == [
        'spec.sharing.mode: Invalid value: "time-slicing": time-slicing needs an NVIDIA GPU; MI300X is made by AMD'
    ]
    doc = pool(flavor={"cpu": "8"}, sharing={"mode": "mps", "replicas": 2})
    assert error_lines(doc) == ["spec.flavor.gpuModel: Required value: sharing mode mps needs a GPU model"]


def test_sharing_fields_belong_to_their_mode() -> None:
    assert error_lines(pool(sharing={"mode": "exclusive", "replicas": 2, "migLayout": {"1g.18gb": 1}})) == [
        "spec.sharing.replicas: Forbidden: may only be set when mode is time-slicing or mps",
        "spec.sharing.migLayout: Forbidden: may only be set when mode is mig",
    ]


def test_unknown_sharing_mode_lists_the_modes() -> None:
    assert error_lines(pool(sharing={"mode": "vgpu"})) == [
        'spec.sharing.mode: Unsupported value: "vgpu": supported values: "exclusive", "time-slicing", "mps", "mig"'
    ]


def test_taints_and_labels_are_validated_with_paths() -> None:
    assert error_lines(pool(taints=[{"key": "nvidia.com/gpu", "effect": "Sometimes"}])) == [
        'spec.taints[0].effect: Unsupported value: "Sometimes": supported values: "NoSchedule", '
        '"PreferNoSchedule", "NoExecute"'
    ]
    (line,) = error_lines(pool(labels={"kgpu.dev/pool": "no spaces"}))
    assert line.startswith('spec.labels: Invalid value: "no spaces": a valid label must be an empty string')


def test_mig_layout_counts_are_integers() -> None:
    assert error_lines(pool(sharing={"mode": "mig", "migLayout": {"1g.18gb": "7"}})) == [
        'spec.sharing.migLayout[1g.18gb]: Invalid value: "7": must be an integer'
    ]


def test_cluster_backends_and_kube_context() -> None:
    cluster = parse_resource(
        {"apiVersion": "kgpu.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "dev"}}
    )
    assert isinstance(cluster, Cluster)
    assert cluster.spec.backend == "local"
    doc = {
        "kind": "Cluster",
        "metadata": {"name": "dev"},
        "spec": {"backend": "local", "kubeContext": "prod"},
    }
    assert error_lines(doc) == ["spec.kubeContext: Forbidden: may only be set when backend is kubernetes"]
    doc["spec"]["backend"] = "kubernetes"
    assert parse_resource(doc).spec.kube_context == "prod"
    assert error_lines({"kind": "Cluster", "metadata": {"name": "dev"}, "spec": {"backend": "nomad"}}) == [
        'spec.backend: Unsupported value: "nomad": supported values: "local", "kubernetes", "sim"'
    ]


def test_flavor_price_comes_from_the_catalog_unless_the_pool_declares_its_own() -> None:
    named = parse_resource(pool(flavor={"name": "g3-ai-16-64-l4-24-1"})).spec.flavor
    assert named.price_per_gpu_hour == 0.8
    by_model = parse_resource(pool(flavor={"gpuModel": "H100-80GB", "gpuCount": 8})).spec.flavor
    assert by_model.price_per_gpu_hour == 2.5
    own = parse_resource(pool(flavor={"gpuModel": "H100-80GB", "gpuCount": 8, "pricePerGpuHour": 1.2}))
    assert own.spec.flavor.price_per_gpu_hour == 1.2
    (line,) = error_lines(pool(flavor={"gpuModel": "L4", "gpuCount": 1, "pricePerGpuHour": -1}))
    assert line.startswith("spec.flavor.pricePerGpuHour:")


def test_service_domain_is_a_dns_subdomain_of_a_kubernetes_cluster_only() -> None:
    def cluster(**spec) -> dict:
        return {"apiVersion": "kgpu.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "c"}, "spec": spec}

    parsed = parse_resource(cluster(backend="kubernetes", serviceDomain="clusterset.local"))
    assert isinstance(parsed, Cluster) and parsed.spec.service_domain == "clusterset.local"
    (line,) = error_lines(cluster(backend="kubernetes", serviceDomain="Mesh_Domain"))
    assert line.startswith('spec.serviceDomain: Invalid value: "Mesh_Domain": a lowercase RFC 1123 subdomain')
    assert error_lines(cluster(backend="sim", serviceDomain="clusterset.local")) == [
        "spec.serviceDomain: Forbidden: may only be set when backend is kubernetes"
    ]
