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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from kgpu.api.models import InferenceService

PORT_ENV = "PORT"
REPLICA_ENV = "KGPU_REPLICA"
DEVICE_ENV = "KGPU_DEVICE"
HOST_ENV = "KGPU_HOST"
# Set by the backend for the device it assigned (local) or by the device plugin (Kubernetes).
VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
MEMORY_FRACTION_ENV = "KGPU_GPU_MEMORY_FRACTION"
# kgpu's own replica; the local backend runs it with the control plane's interpreter.
KGPU_COMMAND = ("python", "-m", "kgpu.serving")
# Models come from disk only: no replica reaches for the network at start.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}

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


def _kgpu_args(service: InferenceService, drain_timeout_s: float) -> list[str]:
    runtime = service.spec.runtime
    args = [
        "--model-uri", service.spec.model.uri,
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


def build_replica_spec(service: InferenceService, *, drain_timeout_s: float = 30.0) -> ReplicaSpec:
    """The replica description of `service` (the one place a service's command line is written)."""
    return ReplicaSpec(
        command=KGPU_COMMAND,
        args=tuple(_kgpu_args(service, drain_timeout_s)),
        env=dict(OFFLINE_ENV),
    )
