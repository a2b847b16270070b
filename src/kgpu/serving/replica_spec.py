"""How an InferenceService becomes one replica: argv, environment, port, probes and devices.

Built once here, from the service, for every runtime; each backend only renders it: the local backend
into a child process (`kgpu.backends.local_replica`), the Kubernetes backend into a container
(`kgpu.backends.kubernetes.workload`). Before this description existed each backend wrote its own
command line and they drifted apart (the local one labelled metrics `service="ns/name"`, the pod
`service="name"`).

What only the backend knows when the process starts (the port it took, the replica's name, the
device it assigned) is written as a Kubernetes dependent-variable reference, `$(PORT)`,
`$(KGPU_REPLICA)`, `$(KGPU_DEVICE)`: Kubernetes expands them in a container's command and args from
its env, and the local backend expands them the same way (`expand`), so both read one argv.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.machinery import PathFinder

from kgpu.api.models import InferenceService
from kgpu.api.runtime_presets import PRESETS
from kgpu.serving.model_source import ModelSourceError, locate_model

PORT_ENV = "PORT"
REPLICA_ENV = "KGPU_REPLICA"
DEVICE_ENV = "KGPU_DEVICE"
HOST_ENV = "KGPU_HOST"
# Command runtimes: where the model is on this machine or node, and the name clients send.
MODEL_PATH_ENV = "MODEL_PATH"
SERVED_MODEL_NAME_ENV = "SERVED_MODEL_NAME"
# Set by the backend for the device it assigned (local) or by the device plugin (Kubernetes).
VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
MEMORY_FRACTION_ENV = "KGPU_GPU_MEMORY_FRACTION"
# kgpu's own replica; the local backend runs it with the control plane's interpreter.
KGPU_COMMAND = ("python", "-m", "kgpu.serving")
# Models come from disk only: no replica reaches for the network at start.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}

# A command or image runtime's server on CPU, unless its env (or, locally, the shell kgpu runs in) says
# otherwise. PyTorch's OpenMP threads (libgomp) spin for a while after each parallel region by default,
# waiting for more work: on a machine whose cores the replica shares with kgpu's gateway that spinning
# takes the core the gateway needs to pass the answer on (measured with `bench.command_overhead
# --openmp-default`, docs/runtimes.md), and in a pod under a CPU limit it burns quota for nothing.
# Passive waiting sleeps at once; servers that want spinning set OMP_WAIT_POLICY themselves.
# kgpu's own replica is left as it is: it sizes its threads itself (kgpu.serving.cpus).
CPU_DEFAULT_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

# $(VAR) expands, $$(VAR) stays literal "$(VAR)", as in Kubernetes' container args.
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand `$(VAR)` references from `env` as Kubernetes does: unknown references stay as written."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(substitute, value)


@dataclass(frozen=True)
class ReplicaSpec:
    """One replica of a service, independent of where it runs."""

    command: tuple[str, ...]  # the executable (a container's entrypoint), with $(VAR) references
    args: tuple[str, ...] = ()  # its arguments, with $(VAR) references
    env: dict[str, str] = field(default_factory=dict)  # fixed environment of every replica
    readiness_path: str = "/v2/health/ready"
    liveness_path: str = "/v2/health/live"
    metrics_path: str | None = "/metrics"
    protocol: str = "kgpu"  # kgpu (OpenAI and v2), openai or v2: what the gateway may send it
    runtime: str = "kgpu"  # kgpu, command or image
    image: str | None = None  # the container image of an image runtime (Kubernetes only)
    served_model_name: str | None = None  # the `model` requests must name; None: the service's name
    cpu_defaults: dict[str, str] = field(default_factory=dict)  # see `defaults`

    def defaults(self, device: str) -> dict[str, str]:
        """Variables the replica gets unless something else sets them: a backend puts them under
        everything else (the spec's env, and locally the shell's). On CPU: CPU_DEFAULT_ENV for servers
        other than kgpu's."""
        if device != "cpu":
            return {}
        return {name: value for name, value in self.cpu_defaults.items() if name not in self.env}

    def environment(
        self,
        *,
        port: int | str,
        replica: str,
        device: str,
        host: str,
        visible_devices: str | None = None,
        memory_fraction: float | None = None,
    ) -> dict[str, str]:
        """The replica's own variables: the fixed ones, then what the backend decided for it."""
        env = {**self.env, PORT_ENV: str(port), REPLICA_ENV: replica, DEVICE_ENV: device, HOST_ENV: host}
        if visible_devices is not None:
            env[VISIBLE_DEVICES_ENV] = visible_devices
        if memory_fraction is not None:
            env[MEMORY_FRACTION_ENV] = f"{memory_fraction:.4f}"
        return env

    def argv(self, env: Mapping[str, str]) -> list[str]:
        """The command line with its references expanded (what a kubelet would run)."""
        return [expand(arg, env) for arg in (*self.command, *self.args)]


def _kgpu_args(service: InferenceService, drain_timeout_s: float, model_uri: str) -> list[str]:
    runtime = service.spec.runtime
    args = [
        "--model-uri", model_uri,
        "--served-name", service.metadata.name,
        "--host", f"$({HOST_ENV})",
        "--port", f"$({PORT_ENV})",
        "--device", f"$({DEVICE_ENV})",
        "--dtype", runtime.dtype,
        "--max-batch-tokens", str(runtime.max_batch_tokens),
        "--max-batch-size", str(runtime.max_batch_size),
        "--max-queue", str(runtime.max_queue),
        "--max-inputs", str(runtime.max_inputs),
        "--replica", f"$({REPLICA_ENV})",
        # The service key ("<namespace>/<name>") on every backend: the replica's metrics carry the
        # same `service` label as the gateway's, and `project` is read from it.
        "--service", service.key,
        "--graceful-timeout", f"{drain_timeout_s:g}",
        "--task", service.spec.model.task,
    ]  # fmt: skip
    if runtime.engine_workers is not None:
        args += ["--engine-workers", str(runtime.engine_workers)]
    if runtime.kv_cache_bytes is not None:
        args += ["--kv-cache-bytes", str(runtime.kv_cache_bytes)]
    if runtime.prefill_chunk_tokens is not None:
        args += ["--prefill-chunk-tokens", str(runtime.prefill_chunk_tokens)]
    return args


def model_location(uri: str) -> str:
    """The model's path on this machine for a command runtime's $(MODEL_PATH) (local backend); the
    URI's path when it is not here."""
    try:
        return str(locate_model(uri))
    except ModelSourceError:
        return uri.removeprefix("file://")


def build_replica_spec(
    service: InferenceService,
    *,
    drain_timeout_s: float = 30.0,
    model_path: str | None = None,
    model_uri: str | None = None,
) -> ReplicaSpec:
    """The replica description of `service` (the one place a service's command line is written).

    `model_path`: where the backend found the model (default: the URI's path, as inside an image).
    `model_uri`: the URI as the replica sees it, where the backend mounts it elsewhere (a pvc://
    volume's mount path on Kubernetes); default spec.model.uri.
    """
    runtime = service.spec.runtime
    model_uri = model_uri or service.spec.model.uri
    if runtime.kind == "kgpu":
        return ReplicaSpec(
            command=KGPU_COMMAND,
            args=tuple(_kgpu_args(service, drain_timeout_s, model_uri)),
            env=dict(OFFLINE_ENV),
        )
    preset = PRESETS[runtime.preset] if runtime.preset else None
    entrypoint = list(runtime.command) or list(preset.command if preset else ())
    args = [*entrypoint[1:], *runtime.args]
    if runtime.port_flag:
        args += [runtime.port_flag, f"$({PORT_ENV})"]
    env = {
        **OFFLINE_ENV,
        **dict(preset.env if preset else ()),
        MODEL_PATH_ENV: model_path or model_uri.removeprefix("file://"),
        SERVED_MODEL_NAME_ENV: service.metadata.name,
        **runtime.env,
    }
    readiness = runtime.readiness_path or (preset.readiness_path if preset else "/health")
    return ReplicaSpec(
        command=tuple(entrypoint[:1]),  # none: an image's own entrypoint
        args=tuple(args),
        env=env,
        readiness_path=readiness,
        liveness_path=(preset.liveness_path if preset else None) or readiness,
        metrics_path=runtime.metrics_path or (preset.metrics_path if preset else None),
        protocol=runtime.protocol or (preset.protocol if preset else "openai"),
        runtime=runtime.kind,
        image=runtime.image,
        served_model_name=expand(preset.served_model_name, env) if preset else None,
        cpu_defaults=dict(CPU_DEFAULT_ENV),
    )


def local_search_path() -> str:
    """PATH of a local replica: the control plane's own environment first, so servers installed
    beside kgpu (`transformers`, `vllm`, ... in the same virtual environment) are found."""
    return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])


def missing_executable(spec: ReplicaSpec) -> str | None:
    """What the replica's command needs and this machine lacks, or None.

    `python -m pkg.module` is looked up as the import system would, without importing anything
    (a tenant's module name must not run code in the control plane).
    """
    if spec.command == KGPU_COMMAND or not spec.command:
        return None
    executable = spec.command[0]
    if executable.startswith("$("):
        return None  # chosen by the replica's env at start
    if shutil.which(executable, path=local_search_path()) is None:
        return executable
    if executable in ("python", "python3") and spec.args[:1] == ("-m",) and len(spec.args) > 1:
        module = spec.args[1].split(".", 1)[0]
        if PathFinder.find_spec(module) is None:
            return f"python -m {spec.args[1]}"
    return None
