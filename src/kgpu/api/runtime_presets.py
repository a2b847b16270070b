"""Presets: the command lines of well-known model servers, so `runtime: {preset: vllm}` is enough.

Each preset is the server's documented way to serve one model on one port, written with the
variables every command runtime gets (`$(MODEL_PATH)`, `$(SERVED_MODEL_NAME)`, `$(KGPU_HOST)`,
`$(PORT)`, expanded as Kubernetes expands a container's args), the path that answers 200 once the
model is loaded, and the protocol the gateway may send it. docs/runtimes.md lists them; a test
renders each into its argv. `runtime.args` are appended, so any other flag of the server still works.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimePreset:
    name: str
    command: tuple[str, ...]
    readiness_path: str
    protocol: str  # openai or v2
    executable: str  # what must be on PATH (or a Python module, "python -m <module>")
    install: str  # how to get it, named in the error when it is missing
    metrics_path: str | None = "/metrics"
    liveness_path: str | None = None  # default: the readiness path
    # The `model` the server answers to (the gateway writes it into each request it forwards).
    served_model_name: str = "$(SERVED_MODEL_NAME)"
    # Fixed variables of every replica (a service's runtime.env overrides them).
    env: tuple[tuple[str, str], ...] = ()


_PRESETS = (
    RuntimePreset(
        name="vllm",
        command=(
            "vllm", "serve", "$(MODEL_PATH)", "--served-model-name", "$(SERVED_MODEL_NAME)",
            "--host", "$(KGPU_HOST)", "--port", "$(PORT)",
        ),
        readiness_path="/health",
        protocol="openai",
        executable="vllm",
        install="pip install vllm (or the vllm/vllm-openai image)",
    ),
    RuntimePreset(
        name="sglang",
        command=(
            "python", "-m", "sglang.launch_server", "--model-path", "$(MODEL_PATH)",
            "--served-model-name", "$(SERVED_MODEL_NAME)", "--host", "$(KGPU_HOST)", "--port", "$(PORT)",
            "--enable-metrics",
        ),
        readiness_path="/health",
        protocol="openai",
        executable="python -m sglang.launch_server",
        install="pip install 'sglang[all]' (or the lmsysorg/sglang image)",
    ),
    RuntimePreset(
        name="tgi",
        command=(
            "text-generation-launcher", "--model-id", "$(MODEL_PATH)", "--hostname", "$(KGPU_HOST)",
            "--port", "$(PORT)",
        ),
        readiness_path="/health",
        protocol="openai",
        executable="text-generation-launcher",
        install="text-generation-inference (the ghcr.io/huggingface/text-generation-inference image)",
    ),
    RuntimePreset(
        name="llama.cpp",
        command=(
            "llama-server", "--model", "$(MODEL_PATH)", "--alias", "$(SERVED_MODEL_NAME)",
            "--host", "$(KGPU_HOST)", "--port", "$(PORT)", "--metrics",
        ),
        readiness_path="/health",
        protocol="openai",
        executable="llama-server",
        install="llama.cpp's llama-server (a release from github.com/ggml-org/llama.cpp, or the "
        "ghcr.io/ggml-org/llama.cpp:server image)",
    ),
    RuntimePreset(
        name="triton",
        command=(
            "tritonserver", "--model-repository=$(MODEL_PATH)", "--http-address=$(KGPU_HOST)",
            "--http-port=$(PORT)", "--allow-grpc=false", "--allow-metrics=false",
        ),
        readiness_path="/v2/health/ready",
        liveness_path="/v2/health/live",
        protocol="v2",
        executable="tritonserver",
        install="NVIDIA Triton Inference Server (the nvcr.io/nvidia/tritonserver image)",
        metrics_path=None,  # Triton serves metrics on a port of their own, turned off here
    ),
    RuntimePreset(
        name="infinity",
        command=(
            "infinity_emb", "v2", "--model-id", "$(MODEL_PATH)", "--served-model-name",
            "$(SERVED_MODEL_NAME)", "--host", "$(KGPU_HOST)", "--port", "$(PORT)", "--url-prefix", "/v1",
            "--device", "$(KGPU_DEVICE)",
        ),
        readiness_path="/health",
        protocol="openai",
        executable="infinity_emb",
        install="pip install 'infinity-emb[server,torch]' (or the michaelf34/infinity image)",
        # Its anonymous usage statistics would call out to the network from every replica.
        env=(("INFINITY_ANONYMOUS_USAGE_STATS", "0"), ("DO_NOT_TRACK", "1")),
    ),
    RuntimePreset(
        name="transformers",
        command=(
            "transformers", "serve", "$(MODEL_PATH)", "--host", "$(KGPU_HOST)", "--port", "$(PORT)",
            "--device", "$(KGPU_DEVICE)",
        ),
        readiness_path="/health",
        protocol="openai",
        executable="transformers",
        install="pip install 'transformers[serving]'",
        metrics_path=None,
        served_model_name="$(MODEL_PATH)",  # a pinned model answers to the path it was given
    ),
)  # fmt: skip

PRESETS: dict[str, RuntimePreset] = {preset.name: preset for preset in _PRESETS}
