"""Command runtimes and presets rendered into the argv a replica runs, and refused when they cannot run here."""

from __future__ import annotations

import pytest

from kgpu.api.errors import ResourceValidationError
from kgpu.api.io import parse_resource
from kgpu.api.runtime_presets import PRESETS
from kgpu.controlplane.platform import check_runtime_available
from kgpu.serving.replica_spec import build_replica_spec

MODEL = "/models/m"  # not on this machine: $(MODEL_PATH) is then the URI's path, as in an image


def service(runtime: dict, name: str = "svc"):
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"model": {"uri": MODEL}, "runtime": runtime},
        }
    )


def rendered(runtime: dict) -> list[str]:
    spec = build_replica_spec(service(runtime))
    env = spec.environment(port=9001, replica="svc-0.team-a", device="cpu", host="127.0.0.1")
    return spec.argv(env)


EXPECTED_ARGV = {
    "vllm": "vllm serve /models/m --served-model-name svc --host 127.0.0.1 --port 9001",
    "sglang": "python -m sglang.launch_server --model-path /models/m --served-model-name svc "
    "--host 127.0.0.1 --port 9001 --enable-metrics",
    "tgi": "text-generation-launcher --model-id /models/m --hostname 127.0.0.1 --port 9001",
    "llama.cpp": "llama-server --model /models/m --alias svc --host 127.0.0.1 --port 9001 --metrics",
    "triton": "tritonserver --model-repository=/models/m --http-address=127.0.0.1 --http-port=9001 "
    "--allow-grpc=false --allow-metrics=false",
    "infinity": "infinity_emb v2 --model-id /models/m --served-model-name svc --host 127.0.0.1 "
    "--port 9001 --url-prefix /v1 --device cpu",
    "transformers": "transformers serve /models/m --host 127.0.0.1 --port 9001 --device cpu",
}
EXPECTED_READINESS = {name: "/health" for name in EXPECTED_ARGV} | {"triton": "/v2/health/ready"}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_renders_its_servers_real_command_line(preset):
    assert " ".join(rendered({"preset": preset})) == EXPECTED_ARGV[preset]
    spec = build_replica_spec(service({"preset": preset}))
    assert spec.readiness_path == EXPECTED_READINESS[preset]
    assert spec.protocol == ("v2" if preset == "triton" else "openai")
    assert spec.runtime == "command"


def test_every_preset_is_documented():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "runtimes.md").read_text()
    for name, argv in EXPECTED_ARGV.items():
        assert f"`{name}`" in docs and argv.split()[0] in docs, name


def test_preset_args_are_appended_and_env_kept():
    argv = rendered(
        {"preset": "vllm", "args": ["--max-model-len", "4096"], "env": {"VLLM_LOGGING_LEVEL": "DEBUG"}}
    )
    assert argv[-2:] == ["--max-model-len", "4096"]
    spec = build_replica_spec(service({"preset": "vllm", "env": {"VLLM_LOGGING_LEVEL": "DEBUG"}}))
    assert spec.env["VLLM_LOGGING_LEVEL"] == "DEBUG" and spec.env["SERVED_MODEL_NAME"] == "svc"


def test_the_infinity_preset_turns_its_usage_statistics_off():
    spec = build_replica_spec(service({"preset": "infinity"}))
    assert spec.env["INFINITY_ANONYMOUS_USAGE_STATS"] == "0" and spec.env["DO_NOT_TRACK"] == "1"
    assert spec.env["HF_HUB_OFFLINE"] == "1"
    mine = build_replica_spec(service({"preset": "infinity", "env": {"DO_NOT_TRACK": "0"}}))
    assert mine.env["DO_NOT_TRACK"] == "0"  # the service's own env wins


def test_a_command_gets_its_port_as_env_and_as_a_flag():
    runtime = {
        "kind": "command",
        "command": ["my-server", "--model", "$(MODEL_PATH)"],
        "portFlag": "--listen",
    }
    assert rendered(runtime) == ["my-server", "--model", "/models/m", "--listen", "9001"]
    spec = build_replica_spec(service({**runtime, "readinessPath": "/ready", "protocol": "v2"}))
    assert (spec.readiness_path, spec.liveness_path, spec.protocol) == ("/ready", "/ready", "v2")
    env = spec.environment(port=9001, replica="r", device="cpu", host="127.0.0.1")
    assert env["PORT"] == "9001"


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        ({"preset": "nope"}, 'spec.runtime.preset: Unsupported value: "nope"'),
        ({"kind": "command"}, "spec.runtime.command: Required value"),
        (
            {"command": ["x"]},
            "spec.runtime.command: Forbidden: may only be set when kind is command or image",
        ),
        ({"kind": "image", "command": ["x"]}, "spec.runtime.image: Required value"),
        ({"kind": "command", "image": "x", "command": ["x"]}, "spec.runtime.image: Forbidden"),
        ({"kind": "command", "command": ["x"], "env": {"PORT": "1"}}, "spec.runtime.env.PORT: Forbidden"),
        ({"kind": "command", "command": ["x"], "readinessPath": "health"}, "spec.runtime.readinessPath"),
    ],
)
def test_bad_runtimes_are_refused_naming_the_field(runtime, message):
    with pytest.raises(ResourceValidationError, match=message.replace("(", r"\(")):
        service(runtime)


def test_a_preset_whose_server_is_not_installed_is_refused_naming_what_to_install():
    [error] = check_runtime_available(service({"preset": "vllm"}))
    assert error.path == "spec.runtime.preset"
    assert "'vllm' is not installed on this machine" in error.message and "pip install vllm" in error.message
    [error] = check_runtime_available(service({"preset": "sglang"}))
    assert "python -m sglang.launch_server" in error.message  # looked up without importing anything
    [error] = check_runtime_available(service({"kind": "command", "command": ["no-such-server-x"]}))
    assert error.path == "spec.runtime.command" and "no-such-server-x" in error.message
    [error] = check_runtime_available(service({"kind": "image", "image": "vllm/vllm-openai:v0.11.0"}))
    assert error.path == "spec.runtime.kind" and "Kubernetes" in error.message
    # Installed beside kgpu (transformers' CLI in the same environment): accepted.
    assert check_runtime_available(service({"preset": "transformers"})) == []
