"""What a kubelet runs for a container: its env resolved in order, then `$(VAR)` in command and args.

Only the parts kgpu's manifests use: literal values, `fieldRef: metadata.name`, and dependent-variable
references to variables defined earlier in the list.
"""

from __future__ import annotations

from typing import Any

from kgpu.serving.replica_spec import expand


def kubelet_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, item
            env[item["name"]] = pod_name
    return env


def kubelet_argv(container: dict[str, Any], pod_name: str) -> list[str]:
    env = kubelet_env(container, pod_name)
    return [expand(arg, env) for arg in [*container.get("command", []), *container.get("args", [])]]
