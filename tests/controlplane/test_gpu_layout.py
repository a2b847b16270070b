"""Each node's GPUs as the console draws them: whole GPUs, shares and MIG slices with the replicas in them."""

from __future__ import annotations

from kgpu.backends.base import ReplicaStatus
from kgpu.backends.local_devices import LocalDevices
from kgpu.controlplane.gpu_layout import local_node
from tests.backends.test_local_placement import h200_with_mig


def test_this_machine_shows_shares_and_mig_slices_held_by_the_local_allocators_replicas():
    inventory = h200_with_mig()  # GPU 0 plain; GPU 1 cut into 3g.71gb, 2g.35gb and two 1g.18gb
    devices = LocalDevices(inventory, shared_slots=4)
    requests = {
        "a-0": ("nvidia.com/gpu.shared", 1),
        "b-0": ("nvidia.com/gpu.shared", 1),
        "m-0": ("nvidia.com/mig-1g.18gb", 1),
    }
    replicas = []
    for name, request in requests.items():
        assignment = devices.assign(name, request, "auto", [])
        replicas.append(
            ReplicaStatus(name, f"default/{name[0]}", "Ready", inventory.hostname, assignment.label)
        )
    replicas.append(ReplicaStatus("p-0", "default/p", "Pending", "", ""))  # holds nothing yet

    node = local_node(inventory, replicas, devices.assignment)
    plain, mig = node["gpus"]
    assert plain["mode"] == "shared"
    assert [(s["replica"], s["size"]) for s in plain["slots"]] == [("a-0", 0.25), ("b-0", 0.25), (None, 0.5)]
    assert plain["slots"][0]["label"].startswith("cuda:0 (")
    assert mig["mode"] == "mig"
    # Widths by memory slices out of the H200's eight.
    assert sorted((s["label"], s["size"], s["replica"] or "") for s in mig["slots"]) == [
        ("MIG 1g.18gb", 0.125, ""),
        ("MIG 1g.18gb", 0.125, "m-0"),
        ("MIG 2g.35gb", 0.25, ""),
        ("MIG 3g.71gb", 0.5, ""),
    ]
    assert node["cpuReplicas"] == []
