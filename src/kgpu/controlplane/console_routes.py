"""What the console's pages read beyond the resources: chart history, the GPU layout, and the one
action that is not a resource write (restarting a replica).

These routes sit behind the same access check as the resource API: a path with a namespace is
open only to that project's tokens, and a write (the restart) only to an admin, so a viewer who
forges the console's restart request gets the same 403 as any other write.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from kgpu.api.models import NodePool, object_key
from kgpu.controlplane import gpu_layout
from kgpu.controlplane.auth import principal_of, visible
from kgpu.controlplane.history import GPU_SERIES, POOL_SERIES, SERVICE_SERIES
from kgpu.controlplane.platform import Platform
from kgpu.controlplane.resources import NotFoundError
from kgpu.controlplane.routes.http import PREFIX

HISTORY = "/api/v1/history"


def console_routes(platform: Platform) -> APIRouter:
    api = APIRouter(tags=["console"])
    history = platform.history

    def window(body: dict) -> dict:
        return {"intervalSeconds": history.interval_s, "windowSeconds": history.window_s, **body}

    def must_exist(kind: str, namespace: str, name: str) -> None:
        try:
            platform.resources.get(kind, namespace, name)
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from None

    @api.get("/api/v1/whoami", summary="Who the caller's token belongs to (what the console offers to do)")
    def whoami(request: Request) -> dict:
        principal = principal_of(request)
        if principal is None:  # no --auth: one user who may do anything
            return {"authenticated": False, "role": "admin", "project": None, "clusterAdmin": False}
        return {
            "authenticated": True,
            "role": principal.role,
            "project": principal.project,
            "clusterAdmin": principal.cluster_admin,
        }

    @api.get(
        HISTORY + "/namespaces/{namespace}/inferenceservices/{name}",
        summary="A service's last 15 minutes: requests/s, errors/s, p50/p99 latency, replicas; TTFT and tokens/s when generating",
    )
    def service_history(namespace: str, name: str) -> dict:
        must_exist("InferenceService", namespace, name)
        return window(history.read("service:" + object_key(namespace, name), SERVICE_SERIES))

    @api.get(
        HISTORY + "/namespaces/{namespace}/nodepools/{name}",
        summary="A node pool's last 15 minutes: nodes (ready) and GPU devices allocated out of allocatable",
    )
    def pool_history(namespace: str, name: str) -> dict:
        must_exist("NodePool", namespace, name)
        return window(history.read("pool:" + object_key(namespace, name), POOL_SERIES))

    @api.get(HISTORY + "/gpus", summary="Each GPU's last 15 minutes: utilization, memory, power")
    def gpu_history(request: Request) -> dict:
        items = {}
        for group in history.groups("gpu"):
            data = history.read(group, GPU_SERIES)
            meta = data["meta"] = dict(data["meta"])
            if not all(visible(request, project) for project in meta.pop("projects", [])):
                meta["replica"] = "replicas of other projects"  # the GPU is shared; who uses it is theirs
            items[group.removeprefix("gpu:")] = data
        return window({"items": items})

    @api.get(
        "/api/v1/gpu-layout",
        summary="Each node's GPUs cut into whole GPUs, MIG slices and shares, with their replicas",
    )
    def layout(request: Request) -> dict:
        backend = platform.backend
        nodes = [gpu_layout.local_node(platform.inventory, backend.local.replicas(), backend.devices_of)]
        pools = [p for p in platform.resources.pools() if isinstance(p, NodePool)]
        simulated = [r for r in backend.replicas() if r.extra.get("simulated")]
        nodes += gpu_layout.sim_nodes(backend.node_items(pools), simulated)
        shown = []
        for node in nodes:
            if node["pool"] is not None and not visible(request, node["pool"].partition("/")[0]):
                continue
            for gpu in node["gpus"]:
                for slot in gpu["slots"]:  # another project's replica: its GPU share shows, not its name
                    if slot["service"] and not visible(request, slot["service"].partition("/")[0]):
                        slot["replica"], slot["service"] = "another project", None
            shown.append(node)
        return {"items": shown}

    @api.post(
        PREFIX + "/namespaces/{namespace}/inferenceservices/{name}/replicas/{replica}/restart",
        summary="Restart a replica: it drains and a fresh one replaces it (like deleting a pod)",
    )
    async def restart_replica(namespace: str, name: str, replica: str) -> dict:
        must_exist("InferenceService", namespace, name)
        key = object_key(namespace, name)
        if not any(r.name == replica for r in platform.backend.replicas(key)):
            raise HTTPException(404, f'service "{key}" has no replica "{replica}"')
        if not await platform.backend.restart_replica(key, replica):
            raise HTTPException(
                409,
                f'replica "{replica}" does not run on this machine: restart it where it runs '
                "(on Kubernetes, delete its pod)",
            )
        platform.reconciler.kick()
        return {"status": "Success", "details": {"service": key, "replica": replica}}

    return api
