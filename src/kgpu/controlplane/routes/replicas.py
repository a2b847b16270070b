"""Replicas, their logs, nodes and Prometheus targets: what the backends report, read-only."""

from __future__ import annotations

import os
from collections.abc import Callable

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse

from kgpu.api.models import NodePool
from kgpu.controlplane.auth import principal_of, reads_metrics, visible
from kgpu.controlplane.registry import BackendRegistry
from kgpu.controlplane.routes.http import PREFIX
from kgpu.gpu.discovery import NodeInventory

MAX_LOG_BYTES = 256 * 1024


def replica_routes(
    backend: BackendRegistry,
    inventory: NodeInventory,
    replica_gpus: Callable[[str], str],
) -> APIRouter:
    api = APIRouter(tags=["control plane"])

    # Registered before the generic /{plural} routes, which would otherwise match first.
    @api.get(
        PREFIX + "/prometheus/targets",
        summary="Prometheus HTTP service discovery: this server (role=server) or the ready replicas",
    )
    def prometheus_targets(request: Request, role: str = Query("replicas", pattern="^(server|replicas)$")):
        node = inventory.hostname
        if role == "server":
            # The address Prometheus reached this server at is the one it can scrape.
            return [{"targets": [request.url.netloc], "labels": {"node": node}}]
        groups = []
        for replica in backend.replicas():
            if replica.phase != "Ready" or not replica.url:
                continue
            if replica.runtime != "kgpu":  # a command runtime's metrics come through the server's /metrics
                continue
            project, _, _name = replica.service.partition("/")
            if not (visible(request, project) or reads_metrics(request)):
                continue
            labels = {
                "project": project,
                "service": replica.service,
                "replica": replica.name,
                "node": replica.node or node,
                "gpu": replica_gpus(replica.name),
            }
            groups.append({"targets": [replica.url.split("://", 1)[-1]], "labels": labels})
        return groups

    @api.get(PREFIX + "/replicas", summary="Replicas of every service")
    def list_replicas(
        request: Request, service: str | None = Query(None, description="namespace/name")
    ) -> dict:
        replicas = backend.replicas(service)
        return {"items": [r.to_dict() for r in replicas if visible(request, r.service.partition("/")[0])]}

    @api.get(PREFIX + "/replicas/{name}/log", summary="A replica's log", response_class=PlainTextResponse)
    def replica_log(
        request: Request, name: str, offset: int = Query(0, ge=0), tail: int | None = Query(None, ge=1)
    ):
        path = backend.log_path(name)
        principal = principal_of(request)
        if principal is not None and not principal.cluster_admin:
            owners = {r.service.partition("/")[0] for r in backend.replicas() if r.name == name}
            if principal.project not in owners:
                raise HTTPException(404, f'no log for replica "{name}"')
        if not path.exists():
            raise HTTPException(404, f'no log for replica "{name}"')
        size = path.stat().st_size
        with path.open("rb") as f:
            if tail is not None:
                f.seek(max(0, size - MAX_LOG_BYTES))
                lines = f.read().decode(errors="replace").splitlines()[-tail:]
                text = "\n".join(lines) + ("\n" if lines else "")
            else:
                f.seek(min(offset, size))
                text = f.read(MAX_LOG_BYTES).decode(errors="replace")
                size = min(size, offset + MAX_LOG_BYTES) if offset <= size else size
        return PlainTextResponse(text, headers={"x-log-offset": str(size)})

    return api


def node_routes(
    backend: BackendRegistry, inventory: NodeInventory, pools: Callable[[], list[NodePool]]
) -> APIRouter:
    api = APIRouter(tags=["control plane"])

    @api.get("/api/v1/nodes", summary="Nodes and their GPUs (this machine; sim clusters' virtual nodes)")
    def nodes(request: Request) -> dict:
        machine = inventory.to_dict()
        machine["replicas"] = sum(
            1
            for r in backend.replicas()
            if r.phase not in ("Pending", "Terminated") and not r.extra.get("simulated")  # on virtual nodes
        )
        machine["backend"] = "local"
        machine["pid"] = os.getpid()
        others = [n for n in backend.node_items(pools()) if visible(request, n["namespace"])]
        return {"items": [machine, *others]}

    return api
