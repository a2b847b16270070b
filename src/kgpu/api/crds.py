"""CustomResourceDefinitions for kgpu's resources, generated from the pydantic models.

The models stay the one source of truth: each CRD's ``openAPIV3Schema`` is the model's JSON
schema (by alias) rewritten into the structural OpenAPI v3 subset the API server accepts:
``$ref`` inlined, ``anyOf``/``null`` unions folded into ``nullable``, string-or-integer
quantities marked ``x-kubernetes-int-or-string``, JSON-Schema-2020 exclusive bounds turned
into OpenAPI 3.0's boolean form, and ``additionalProperties: false`` dropped (the API server
prunes unknown fields instead). Rules that span fields (GPU limits, MIG layouts) are not
expressible here; the operator validates every object with the models before acting on it.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from kgpu import API_VERSION
from kgpu.api.models import ClusterSpec, InferenceServiceSpec, NodePoolSpec

GROUP, VERSION = API_VERSION.split("/")

# Keys of JSON Schema that have no place in a structural schema or carry nothing for users.
_DROPPED_KEYS = {"title", "$defs", "additionalProperties", "const", "exclusiveMinimum", "exclusiveMaximum"}


class CrdSchemaError(ValueError):
    """A model uses a schema construct that has no structural OpenAPI v3 form."""


def _resolve(ref: str, defs: dict[str, Any]) -> dict[str, Any]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise CrdSchemaError(f"cannot inline $ref {ref!r}")
    return defs[ref[len(prefix) :]]


def _union(options: list[dict[str, Any]], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Fold an ``anyOf`` into one structural node: X|null -> nullable X; string|integer -> int-or-string."""
    non_null = [o for o in options if o.get("type") != "null"]
    nullable = len(non_null) < len(options)
    types = {o.get("type") for o in non_null}
    if types == {"string", "integer"} and all(set(o) == {"type"} for o in non_null):
        node: dict[str, Any] = {"x-kubernetes-int-or-string": True}
    elif len(non_null) == 1:
        node = structural(non_null[0], defs, path)
    else:
        raise CrdSchemaError(f"{path}: anyOf with different types has no structural form: {options}")
    if nullable:
        node["nullable"] = True
    return node


def structural(schema: dict[str, Any], defs: dict[str, Any], path: str = "") -> dict[str, Any]:
    """One JSON-schema node (pydantic's output) as a structural OpenAPI v3 node."""
    if "$ref" in schema:
        merged = {**_resolve(schema["$ref"], defs), **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs, path)
    if "anyOf" in schema:
        node = _union(schema["anyOf"], defs, path)
        for key in ("description", "default"):
            if key in schema and schema[key] is not None:
                node[key] = schema[key]
        return node
    node = {k: v for k, v in schema.items() if k not in _DROPPED_KEYS and k not in ("properties", "items")}
    if node.get("default", 0) is None:
        del node["default"]
    if "const" in schema:
        node["enum"] = [schema["const"]]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in schema:
            node[plain] = schema[bound]
            node[bound] = True
    if "properties" in schema:
        node["properties"] = {
            name: structural(sub, defs, f"{path}.{name}") for name, sub in schema["properties"].items()
        }
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        node["additionalProperties"] = structural(additional, defs, f"{path}[*]")
    elif additional is True and "properties" not in schema:
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in schema:
        node["items"] = structural(schema["items"], defs, f"{path}[]")
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        raise CrdSchemaError(f"{path}: no type; structural schemas need one on every node")
    return node


def spec_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}), "spec")


def _resource_schema(spec_model: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(spec_model),
            # Status is written by kgpu's own controllers and grows with them; it is not user input.
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }


def _column(name: str, json_path: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": json_path}
    if priority:
        column["priority"] = priority
    return column


_AGE = _column("Age", ".metadata.creationTimestamp", "date")


def _crd(
    kind: str,
    plural: str,
    short_names: list[str],
    spec_model: type[BaseModel],
    description: str,
    columns: list[dict[str, Any]],
    subresources: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "kgpu"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["kgpu"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": _resource_schema(spec_model, description)},
                    "subresources": subresources,
                    "additionalPrinterColumns": [*columns, _AGE],
                }
            ],
        },
    }


def inference_service_crd() -> dict[str, Any]:
    return _crd(
        "InferenceService",
        "inferenceservices",
        ["kisvc"],
        InferenceServiceSpec,
        "An embedding model served by replicas running kgpu.serving, scaled by kgpu's autoscaler.",
        [
            _column("Model", ".spec.model.uri"),
            _column("Replicas", ".spec.replicas", "integer"),
            _column("Ready", ".status.readyReplicas", "integer"),
            _column("Phase", ".status.phase"),
            _column("GPU", ".status.gpu", priority=1),
            _column("Message", ".status.message", priority=1),
        ],
        {
            "status": {},
            # `kubectl scale` and kgpu's autoscaler both move spec.replicas through this subresource.
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
    )


def node_pool_crd() -> dict[str, Any]:
    return _crd(
        "NodePool",
        "nodepools",
        ["knp"],
        NodePoolSpec,
        "A group of GPU nodes with one flavor and one GPU sharing mode (exclusive, time-slicing, MPS, MIG).",
        [
            _column("GPU", ".spec.flavor.gpuModel"),
            _column("GPUs/Node", ".spec.flavor.gpuCount", "integer"),
            _column("Sharing", ".spec.sharing.mode"),
            _column("Nodes", ".status.nodes", "integer"),
            _column("MIG State", ".status.migConfigState"),
            _column("Min", ".spec.minNodes", "integer", priority=1),
            _column("Max", ".spec.maxNodes", "integer", priority=1),
        ],
        {"status": {}},
    )


def cluster_crd() -> dict[str, Any]:
    return _crd(
        "Cluster",
        "clusters",
        ["kcl"],
        ClusterSpec,
        "A place kgpu runs services: the local machine, a Kubernetes cluster, or the simulator.",
        [
            _column("Backend", ".spec.backend"),
            _column("Context", ".spec.kubeContext"),
            _column("Version", ".spec.version", priority=1),
        ],
        {"status": {}},
    )


def all_crds() -> list[dict[str, Any]]:
    return [inference_service_crd(), node_pool_crd(), cluster_crd()]


def crds_yaml() -> str:
    """All CRDs as one multi-document YAML stream, ready for ``kubectl apply -f -``."""
    return "---\n".join(yaml.safe_dump(crd, sort_keys=False, width=110) for crd in all_crds())
