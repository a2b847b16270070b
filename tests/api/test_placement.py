"""spec.placement: which clusters a service may run in and the policy; errors name the field."""

from __future__ import annotations

from typing import get_args

from kgpu.api.io import parse_resource
from kgpu.api.models import InferenceService, PlacementSpec
from kgpu.multicluster.placement import PLACEMENT_POLICIES
from tests.api._support import error_lines, service


def test_placement_names_clusters_a_selector_and_a_policy():
    parsed = parse_resource(
        service(
            placement={
                "clusters": ["on-prem", "cloud"],
                "clusterSelector": {"matchLabels": {"region": "eu-west"}},
                "policy": "fill",
            }
        )
    )
    assert isinstance(parsed, InferenceService)
    placement = parsed.spec.placement
    assert placement.clusters == ["on-prem", "cloud"]
    assert placement.cluster_selector.match_labels == {"region": "eu-west"}
    assert placement.policy == "fill"
    assert parse_resource(service(placement={"clusters": ["a"]})).spec.placement.policy == "spread"


def test_without_placement_a_service_is_as_before():
    assert parse_resource(service()).spec.placement is None


def test_the_api_policies_are_the_placement_policies():
    assert set(get_args(PlacementSpec.model_fields["policy"].annotation)) == set(PLACEMENT_POLICIES)


def test_placement_errors_name_the_field():
    assert error_lines(service(placement={"clusters": ["a"], "policy": "cheapest"})) == [
        'spec.placement.policy: Unsupported value: "cheapest": supported values: "fill", "spread", "failover"'
    ]
    assert error_lines(service(placement={"clusters": ["cloud", "Cloud_2", "cloud"]}))[1:] == [
        'spec.placement.clusters[2]: Duplicate value: "cloud"'
    ]
    assert error_lines(service(placement={"clusters": ["Cloud_2"]}))[0].startswith(
        'spec.placement.clusters[0]: Invalid value: "Cloud_2"'
    )
    assert error_lines(service(placement={"policy": "fill"})) == [
        "spec.placement.clusters: Required value: name the clusters, or give clusterSelector.matchLabels"
    ]
    assert error_lines(service(placement={"clusterSelector": {"matchLabels": {"spot": "yes please"}}}))[
        0
    ].startswith('spec.placement.clusterSelector.matchLabels: Invalid value: "yes please"')
    assert error_lines(service(placement={"clusters": ["a"], "region": "eu"})) == [
        'spec.placement.region: unknown field "region"; known fields: clusterSelector, clusters, policy'
    ]


def test_the_one_cluster_annotation_and_placement_exclude_each_other():
    doc = service(placement={"clusters": ["a"]})
    doc["metadata"]["annotations"] = {"kgpu.dev/cluster": "a"}
    assert error_lines(doc) == [
        "metadata.annotations[kgpu.dev/cluster]: Forbidden: may not be set together with spec.placement "
        "(list the cluster in spec.placement.clusters)"
    ]
