"""Every manifest kgpu renders validates against the official Kubernetes schemas, 1.30 through 1.34.

The schemas are the ones kubernetes-validate ships (strict variants: unknown fields are errors).
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from kgpu.backends.kubernetes.nodepool import (
    render_device_plugin_configmap,
    render_mig_parted_configmap,
)
from kgpu.backends.kubernetes.workload import WorkloadSettings, render_service_objects
from tests.kubernetes._matrix import pools, services

WANTED = ["1.30", "1.31", "1.32", "1.33", "1.34"]
VERSIONS = [v for v in WANTED if any(s.startswith(v + ".") for s in all_versions())]
OWNER = {
    "apiVersion": "kgpu.dev/v1alpha1",
    "kind": "InferenceService",
    "name": "x",
    "uid": "0b5e6a9c-7d1f-4c3e-9a52-1f2d3c4b5a69",
    "controller": True,
    "blockOwnerDeletion": True,
}


def validate_everywhere(manifest: dict[str, Any]) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_installed_schemas_cover_1_30_through_1_34():
    assert VERSIONS == WANTED


@pytest.mark.parametrize("case", list(services()))
def test_service_manifests_validate_against_kubernetes_schemas(case):
    isvc = services()[case]
    objects = render_service_objects(isvc, WorkloadSettings(), OWNER, service_monitor=True)
    kinds = [o["kind"] for o in objects]
    assert kinds == ["Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor"]
    for manifest in objects:
        if manifest["kind"] == "ServiceMonitor":
            continue  # a Prometheus-operator CRD: checked against its shape in test_renderer
        validate_everywhere(manifest)


def test_pool_configmaps_validate_against_kubernetes_schemas():
    every_pool = list(pools().values())
    for manifest in (render_device_plugin_configmap(every_pool), render_mig_parted_configmap(every_pool)):
        validate_everywhere(manifest)


def test_validation_is_strict_so_a_misspelt_field_fails():
    deployment = render_service_objects(services()["exclusive"])[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
