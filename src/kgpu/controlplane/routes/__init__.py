"""The control plane's REST API: thin handlers, one module per group of paths.

`resources` (CRUD, patch and watch of the resource kinds), `replicas` (replicas, logs, nodes,
Prometheus targets); `http` holds what they share. Each group is handed the collaborators it
uses, not the whole platform.
"""

from __future__ import annotations

from fastapi import APIRouter

from kgpu.controlplane.platform import Platform
from kgpu.controlplane.routes.http import PREFIX
from kgpu.controlplane.routes.replicas import node_routes, replica_routes
from kgpu.controlplane.routes.resources import resource_routes
from kgpu.controlplane.watch import WatchBus

__all__ = ["PREFIX", "control_routes"]


def control_routes(platform: Platform) -> APIRouter:
    """Every control-plane route; `api.watch_bus` is the bus the watches read (the server exposes it)."""
    bus = WatchBus(platform.store.revision())
    platform.store.add_listener(bus.publish)
    api = APIRouter()
    # Replica paths first: `/replicas` and `/prometheus/targets` would otherwise match `/{plural}`.
    api.include_router(replica_routes(platform.backend, platform.inventory, platform.replica_gpus))
    api.include_router(resource_routes(platform.resources, platform.status.render, bus))
    api.include_router(node_routes(platform.backend, platform.inventory, platform.resources.pools))
    api.watch_bus = bus
    return api
