"""ServiceMonitors kgpu renders, validated against the Prometheus operator's monitoring.coreos.com/v1 schema.

kubernetes-validate has only the built-in kinds. The schema here comes from
cloudcoil-models-prometheus-operator: pydantic models generated from the Prometheus operator's
CRDs (types, enums and patterns such as the Duration pattern of `interval`). Those models ignore
unknown fields, so a field must also survive a round trip through the model: a misspelt field
(which the API server would prune without a word) fails here.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor
from pydantic import ValidationError

from kgpu.backends.kubernetes.workload import render_service_monitor
from tests.kubernetes._matrix import services


def validate_service_monitor(manifest: dict[str, Any]) -> None:
    model = ServiceMonitor.model_validate(manifest)
    kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert kept == manifest, "fields the ServiceMonitor schema does not have were dropped"


@pytest.mark.parametrize("name", sorted(services()))
def test_rendered_service_monitors_validate_against_the_prometheus_operator_schema(name):
    manifest = render_service_monitor(services()[name])
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    validate_service_monitor(manifest)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m["spec"]["endpoints"][0].update(interval="15 seconds"), "should match pattern"),
        (lambda m: m["spec"]["endpoints"][0].update(scheme="ftp"), "scheme"),
        (lambda m: m.update(apiVersion="monitoring.coreos.com/v2"), "apiVersion"),
        (lambda m: m["spec"]["endpoints"][0].update(prot="http"), "dropped"),
    ],
)
def test_broken_service_monitors_fail_the_schema(mutate, message):
    manifest = copy.deepcopy(render_service_monitor(next(iter(services().values()))))
    mutate(manifest)
    with pytest.raises((ValidationError, AssertionError), match=message):
        validate_service_monitor(manifest)
