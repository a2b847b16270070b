"""kgpu's custom resources as the API server returns them, read back into kgpu's models.

Free of the Kubernetes client, so the control plane can import it without loading the client.
"""

from __future__ import annotations

from typing import Any

from kgpu.api.io import parse_resource
from kgpu.api.models import InferenceService, NodePool


def model_of(obj: dict[str, Any]) -> InferenceService | NodePool:
    """Validate a custom resource as read from the API server with kgpu's models (the full rules)."""
    meta = obj.get("metadata") or {}
    doc = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace") or "default",
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
        },
        "spec": obj.get("spec") or {},
    }
    return parse_resource(doc)
