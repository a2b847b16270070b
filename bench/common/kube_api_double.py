"""A Kubernetes API server double over HTTP, for the calls kgpu makes, driven by the real ``kubernetes`` client.

No API server can run here, so tests and benchmarks start this loopback server instead and point the
official client at it: every request goes through the client's real serialization, URL building,
content types, error mapping and watch decoding. The double answers as kube-apiserver does for:

- get, list (label and field selectors), create (409 AlreadyExists), replace and delete;
- PATCH with ``application/apply-patch+yaml`` (server-side apply: a field manager is required,
  fields are owned per manager, a conflict with another manager's field is a 409 unless forced,
  fields the manager no longer applies are removed when nobody else owns them, associative lists
  merge by key, ``metadata.managedFields`` is reported in the FieldsV1 format),
  ``application/merge-patch+json``, ``application/strategic-merge-patch+json`` (built-in kinds
  only; 415 for custom resources, as the real server does) and ``application/json-patch+json``;
  a patch or replace carrying a stale ``metadata.resourceVersion`` is a 409 Conflict;
- the ``status`` and ``scale`` subresources and the pods' ``binding`` subresource (binding an
  already bound pod is a 409; the Binding's annotations are copied to the pod);
- watches: a chunked stream of JSON events from a resourceVersion (initial ADDED events without
  one), BOOKMARK events when asked for, ``timeoutSeconds``, and a 410 Gone ERROR event for a
  resourceVersion older than the compacted history. Tests close streams and compact history at will.

Simplifications, stated so no test leans on them: no admission, no defaulting, no schema
validation, no authentication; one object version per resource; lists whose items all carry a
``name`` (or ``uid`` or ``type``) are associative by it, every other list is atomic (node taints
and tolerations are atomic in Kubernetes too).
"""

from __future__ import annotations

import bisect
import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

CLUSTER_SCOPED = {"nodes", "namespaces", "customresourcedefinitions", "nodepools-cluster"}
BUILTIN_GROUPS = {"", "apps", "policy", "coordination.k8s.io", "events.k8s.io", "apiextensions.k8s.io"}
SERVER_METADATA = {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"}
LIST_KEYS = ("name", "uid", "type")
KINDS = {
    "pods": "Pod",
    "nodes": "Node",
    "services": "Service",
    "configmaps": "ConfigMap",
    "events": "Event",
    "deployments": "Deployment",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "leases": "Lease",
    "inferenceservices": "InferenceService",
    "nodepools": "NodePool",
    "servicemonitors": "ServiceMonitor",
    "customresourcedefinitions": "CustomResourceDefinition",
    "namespaces": "Namespace",
}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


# ------------------------------------------------------------------ field sets (server-side apply)

Path = tuple  # of ("f", key) and ("k", json key) steps


def _list_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in LIST_KEYS:
        if all(key in i for i in items):
            return key
    return None


def field_paths(obj: Any, prefix: Path = ()) -> set[Path]:
    """Leaf paths of ``obj``: scalars, atomic lists and empty maps are leaves; associative list items
    are owned themselves (so a dropped item is removed) and by their fields."""
    paths: set[Path] = set()
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            paths |= field_paths(value, (*prefix, ("f", key)))
    elif isinstance(obj, list) and (key := _list_key(obj)):
        for item in obj:
            item_path = (*prefix, ("k", json.dumps({key: item[key]})))
            paths.add(item_path)
            paths |= field_paths(item, item_path)
    else:
        paths.add(prefix)
    return paths


def object_paths(obj: dict[str, Any], subresource: str | None) -> set[Path]:
    """The fields of an object that managers own: spec-like fields, or only status for /status."""
    if subresource == "status":
        return field_paths(obj.get("status"), (("f", "status"),)) if "status" in obj else set()
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in SERVER_METADATA}
    meta.pop("name", None)
    meta.pop("namespace", None)
    body["metadata"] = meta
    if not meta:
        body.pop("metadata")
    return field_paths(body)


_MISSING = object()


def _step(node: Any, step: tuple[str, str]) -> Any:
    kind, key = step
    if kind == "f":
        return node.get(key, _MISSING) if isinstance(node, dict) else _MISSING
    want = json.loads(key)
    ((k, v),) = want.items()
    if isinstance(node, list):
        for item in node:
            if isinstance(item, dict) and item.get(k) == v:
                return item
    return _MISSING


def value_at(obj: Any, path: Path) -> Any:
    for step in path:
        obj = _step(obj, step)
        if obj is _MISSING:
            return _MISSING
    return obj


def remove_path(obj: Any, path: Path) -> None:
    """Delete the field or list item at ``path``, then the maps and lists that this left empty."""
    parents = [obj]
    for step in path:
        nxt = _step(parents[-1], step)
        if nxt is _MISSING:
            return
        parents.append(nxt)
    for depth in range(len(parents) - 1, 0, -1):
        node, parent = parents[depth], parents[depth - 1]
        if depth < len(parents) - 1 and node not in ({}, []):
            break
        kind, key = path[depth - 1]
        if isinstance(parent, dict) and kind == "f":
            parent.pop(key, None)
        elif isinstance(parent, list):
            parent[:] = [item for item in parent if item is not node]


def merge_apply(live: Any, config: Any) -> Any:
    """Server-side apply's merge: maps recursively, associative lists item by item, others replaced."""
    if isinstance(live, dict) and isinstance(config, dict):
        out = dict(live)
        for key, value in config.items():
            out[key] = merge_apply(live.get(key), value) if key in live else copy.deepcopy(value)
        return out
    key = _list_key(config) if isinstance(config, list) else None
    if key and isinstance(live, list) and _list_key(live) == key:
        by_key = {item[key]: item for item in live}
        merged = [merge_apply(by_key.get(item[key], {}), item) for item in config]
        applied = {item[key] for item in config}
        return merged + [item for item in live if item[key] not in applied]
    return copy.deepcopy(config)


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    """A path set in the API's FieldsV1 form ({"f:spec": {"f:replicas": {}}, ...})."""
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for kind, key in path:
            node = node.setdefault(f"{kind}:{key}", {})
        if path and path[-1][0] == "k":
            node.setdefault(".", {})
    return root


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """The strategic merge patch of built-in kinds, as far as kgpu's objects need it: maps merge,
    lists of named items (containers, env, ports, volumes) merge by name and conditions by type,
    other lists are replaced."""
    if isinstance(patch, dict):
        out = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge_patch(out.get(key), value)
        return out
    key = _list_key(patch) if isinstance(patch, list) else None
    if key in ("name", "type") and isinstance(target, list):
        by_key = {item.get(key): item for item in target if isinstance(item, dict)}
        merged = [strategic_merge_patch(by_key.get(item[key]), item) for item in patch]
        keys = {item[key] for item in patch}
        return [item for item in target if item.get(key) not in keys] + merged
    return copy.deepcopy(patch)


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ApiError(422, "Invalid", f"the test operation on {op['path']} failed")
        elif op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise ApiError(400, "BadRequest", f"json patch op {op['op']!r} is not supported")
    return doc


# ------------------------------------------------------------------ selectors


def label_matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in (t.strip() for t in selector.split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_matches(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    for term in (t.strip() for t in selector.split(",")):
        negate = "!=" in term
        key, want = term.split("!=" if negate else "=", 1)
        value: Any = obj
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if (str(value or "") == want) == negate:
            return False
    return True


# ------------------------------------------------------------------ the store


@dataclass
class Request:
    """One request as the double saw it, with the status code it answered."""

    method: str
    path: str
    content_type: str
    query: dict[str, str]
    code: int = 0


@dataclass
class Stored:
    obj: dict[str, Any]
    managers: dict[tuple[str, str, str | None], set[Path]] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def collection(self) -> tuple[str, str]:
        return (self.api_version, self.plural)


def route_path(route: Route) -> str:
    base = f"/apis/{route.group}/{route.version}" if route.group else f"/api/{route.version}"
    if route.namespace:
        base += f"/namespaces/{route.namespace}"
    return "/".join(p for p in (base, route.plural, route.name, route.subresource) if p)


def parse_route(path: str) -> Route:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"]:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if not rest:
        raise ApiError(404, "NotFound", f"no resource in {path}")
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return Route(group, version, plural, namespace, name, sub)


class ApiStore:
    """Objects, resource versions and the event history watches replay."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.objects: dict[tuple[str, str, str, str], Stored] = {}
        self.revision = 1
        self.history: list[tuple[int, tuple[str, str], str, dict[str, Any]]] = []
        self.compacted = 0  # watches from a resourceVersion below this get 410 Gone
        self.requests: list[Request] = []
        self.closed_generation = 0  # bumped to end every open watch stream
        self.fail_next: list[tuple[str, str, ApiError]] = []  # (method, path substring, error)

    # -- helpers
    def _key(self, route: Route, name: str | None = None) -> tuple[str, str, str, str]:
        return (route.api_version, route.plural, route.namespace or "", name or route.name or "")

    def _record(self, route: Route, kind: str, obj: dict[str, Any]) -> None:
        self.history.append((self.revision, route.collection, kind, copy.deepcopy(obj)))
        self.lock.notify_all()

    def _bump(self, obj: dict[str, Any]) -> None:
        self.revision += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.revision)

    def _publish_managed(self, stored: Stored) -> None:
        stored.obj["metadata"]["managedFields"] = [
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": stored.obj.get("apiVersion", ""),
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(paths),
                **({"subresource": sub} if sub else {}),
            }
            for (manager, operation, sub), paths in sorted(stored.managers.items(), key=lambda kv: kv[0][:2])
            if paths
        ]

    def get(self, route: Route) -> dict[str, Any]:
        stored = self.objects.get(self._key(route))
        if stored is None:
            raise ApiError(404, "NotFound", f'{route.plural} "{route.name}" not found')
        return stored.obj

    def list(self, route: Route, labels: str | None, fields: str | None) -> list[dict[str, Any]]:
        out = []
        for (api_version, plural, ns, _), stored in sorted(self.objects.items()):
            if (api_version, plural) != route.collection:
                continue
            if route.namespace and ns != route.namespace:
                continue
            meta = stored.obj.get("metadata") or {}
            if label_matches(meta.get("labels") or {}, labels) and field_matches(stored.obj, fields):
                out.append(stored.obj)
        return out

    # -- writes
    def _new(self, route: Route, body: dict[str, Any], manager: str, operation: str) -> Stored:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if route.namespace and route.plural not in CLUSTER_SCOPED:
            meta["namespace"] = route.namespace
        meta.update(
            uid=str(uuid.uuid4()),
            generation=1,
            creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        obj.setdefault("apiVersion", route.api_version)
        obj.setdefault("kind", KINDS.get(route.plural, route.plural))
        stored = Stored(obj)
        stored.managers[(manager, operation, None)] = object_paths(obj, None)
        self._bump(obj)
        self.objects[self._key(route, meta.get("name"))] = stored
        self._publish_managed(stored)
        self._record(route, "ADDED", obj)
        return stored

    def create(self, route: Route, body: dict[str, Any], manager: str) -> dict[str, Any]:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value: name is required")
        if self._key(route, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{route.plural} "{name}" already exists')
        return self._new(route, body, manager, "Update").obj

    def _check_version(self, stored: Stored, body: dict[str, Any]) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != stored.obj["metadata"]["resourceVersion"]:
            name = stored.obj["metadata"]["name"]
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {stored.obj.get("kind", "object").lower()}s "{name}": '
                "the object has been modified; please apply your changes to the latest version and try again",
            )

    def _write(self, route: Route, stored: Stored, new: dict[str, Any], manager: str) -> dict[str, Any]:
        """An update (not apply): ``manager`` takes the fields it changed; fields gone leave every manager."""
        sub = route.subresource if route.subresource in ("status", "scale") else None
        old = stored.obj
        if sub == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
        elif route.plural in ("inferenceservices", "nodepools", "deployments", "pods"):
            new = {**new, "status": copy.deepcopy(old.get("status"))}  # status only through /status
        if new.get("status") is None:
            new.pop("status", None)
        for key in ("uid", "creationTimestamp", "generation", "name", "namespace"):
            if key in old["metadata"]:
                new.setdefault("metadata", {})[key] = old["metadata"][key]
        if sub != "status" and _spec_of(new) != _spec_of(old):
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        before = _ownership(stored)
        old_paths, new_paths = object_paths(old, sub), object_paths(new, sub)
        changed = {p for p in new_paths if value_at(old, p) != value_at(new, p)}
        gone = old_paths - new_paths
        for key, paths in stored.managers.items():
            paths -= gone
            if key[0] != manager:
                paths -= changed
        stored.managers.setdefault((manager, "Update", sub), set()).update(changed)
        return self._commit(route, stored, new, before)

    def replace(self, route: Route, body: dict[str, Any], manager: str) -> dict[str, Any]:
        stored = self.objects.get(self._key(route))
        if stored is None:
            raise ApiError(404, "NotFound", f'{route.plural} "{route.name}" not found')
        self._check_version(stored, body)
        return self._write(route, stored, copy.deepcopy(body), manager)

    def patch(
        self, route: Route, content_type: str, body: Any, manager: str | None, force: bool
    ) -> dict[str, Any]:
        if content_type.startswith("application/apply-patch"):
            if not manager:
                raise ApiError(
                    400, "BadRequest", "PATCH with application/apply-patch+yaml requires fieldManager"
                )
            return self.apply(route, body, manager, force)
        if force:
            raise ApiError(400, "BadRequest", "force: Forbidden: may not be specified for non-apply patch")
        stored = self.objects.get(self._key(route))
        if stored is None:
            raise ApiError(404, "NotFound", f'{route.plural} "{route.name}" not found')
        current = stored.obj
        if route.subresource == "scale":
            replicas = merge_patch({"spec": {"replicas": (current.get("spec") or {}).get("replicas")}}, body)
            new = merge_patch(current, {"spec": {"replicas": replicas["spec"]["replicas"]}})
            route = Route(route.group, route.version, route.plural, route.namespace, route.name, None)
        elif content_type.startswith("application/merge-patch+json"):
            self._check_version(stored, body)
            new = merge_patch(current, body)
        elif content_type.startswith("application/strategic-merge-patch+json"):
            if route.group not in BUILTIN_GROUPS:
                raise ApiError(
                    415, "UnsupportedMediaType", "the body of the request was in an unknown format"
                )
            self._check_version(stored, body)
            new = strategic_merge_patch(current, body)
        elif content_type.startswith("application/json-patch+json"):
            new = json_patch(current, body)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")
        new.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self._write(route, stored, new, manager or "unknown")

    def apply(self, route: Route, config: dict[str, Any], manager: str, force: bool) -> dict[str, Any]:
        sub = route.subresource if route.subresource == "status" else None
        stored = self.objects.get(self._key(route))
        if stored is None:
            if sub:
                raise ApiError(404, "NotFound", f'{route.plural} "{route.name}" not found')
            return self._new(route, config, manager, "Apply").obj
        live = stored.obj
        before = _ownership(stored)
        wanted = object_paths(config, sub)
        mine = (manager, "Apply", sub)
        conflicts = []
        for key, paths in stored.managers.items():
            if key[0] == manager:
                continue
            for path in paths & wanted:
                if value_at(live, path) != value_at(config, path):
                    conflicts.append((key[0], path))
        if conflicts and not force:
            text = "; ".join(f'conflict with "{m}": .{_dotted(p)}' for m, p in sorted(conflicts))
            raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): {text}")
        for owner, path in conflicts:
            for key, paths in stored.managers.items():
                if key[0] == owner:
                    paths.discard(path)
        new = copy.deepcopy(live)
        others = set().union(*(p for k, p in stored.managers.items() if k != mine))
        for path in sorted(stored.managers.get(mine, set()) - wanted, key=len, reverse=True):
            if path not in others and not any(path[: len(o)] == o or o[: len(path)] == path for o in others):
                remove_path(new, path)
        body = config if sub is None else {"status": config.get("status")}
        body = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        body["metadata"] = (
            {k: v for k, v in (config.get("metadata") or {}).items() if k not in SERVER_METADATA}
            if sub is None
            else {}
        )
        new = merge_apply(new, body)
        if sub is None and _spec_of(new) != _spec_of(live):
            new["metadata"]["generation"] = int(live["metadata"].get("generation", 1)) + 1
        stored.managers[mine] = wanted
        return self._commit(route, stored, new, before)

    def _commit(
        self, route: Route, stored: Stored, new: dict[str, Any], before: dict[Any, frozenset[Path]]
    ) -> dict[str, Any]:
        """Store a changed object (new resourceVersion, a MODIFIED event); a write that changed
        nothing, ownership included, is a no-op as on the real server: no version, no event."""
        if _content(new) == _content(stored.obj) and _ownership(stored) == before:
            return stored.obj
        stored.obj = new
        self._bump(new)
        self._publish_managed(stored)
        self._record(route, "MODIFIED", new)
        return new

    def delete(self, route: Route) -> dict[str, Any]:
        key = self._key(route)
        stored = self.objects.pop(key, None)
        if stored is None:
            raise ApiError(404, "NotFound", f'{route.plural} "{route.name}" not found')
        self._bump(stored.obj)
        self._record(route, "DELETED", stored.obj)
        return stored.obj

    def bind(self, route: Route, binding: dict[str, Any]) -> dict[str, Any]:
        name = route.name if route.subresource == "binding" else (binding.get("metadata") or {}).get("name")
        route = Route(route.group, route.version, "pods", route.namespace, name, None)
        pod_route = route
        stored = self.objects.get(self._key(pod_route))
        if stored is None:
            raise ApiError(404, "NotFound", f'pods "{route.name}" not found')
        node = (binding.get("target") or {}).get("name")
        if not node:
            raise ApiError(422, "Invalid", "target.name: Required value")
        spec = stored.obj.setdefault("spec", {})
        if spec.get("nodeName"):
            raise ApiError(
                409, "Conflict", f'pod {route.name} is already assigned to node "{spec["nodeName"]}"'
            )
        new = copy.deepcopy(stored.obj)
        new["spec"]["nodeName"] = node
        annotations = (binding.get("metadata") or {}).get("annotations") or {}
        if annotations:
            new["metadata"].setdefault("annotations", {}).update(annotations)
        stored.obj = new
        self._bump(new)
        self._publish_managed(stored)
        self._record(pod_route, "MODIFIED", new)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # -- test hooks
    def compact(self, close_watches: bool = False) -> None:
        """Forget the event history: watches from any older resourceVersion now get 410 Gone (and,
        with ``close_watches``, every open watch must start again, from a version now too old)."""
        with self.lock:
            self.compacted = self.revision + 1
            self.history.clear()
            if close_watches:
                self.closed_generation += 1
            self.lock.notify_all()

    def close_watches(self) -> None:
        """End every open watch stream (as an API server restart or a load balancer would)."""
        with self.lock:
            self.closed_generation += 1
            self.lock.notify_all()


def _ownership(stored: Stored) -> dict[Any, frozenset[Path]]:
    return {key: frozenset(paths) for key, paths in stored.managers.items() if paths}


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")}
    return {**obj, "metadata": meta}


def _spec_of(obj: dict[str, Any]) -> Any:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _dotted(path: Path) -> str:
    return ".".join(key if kind == "f" else f"[{key}]" for kind, key in path)


# ------------------------------------------------------------------ HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, every answer would
    # wait for the client's delayed ACK (~40 ms), which no real API server makes a client wait.
    disable_nagle_algorithm = True
    server: ApiServerDouble

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        if self.server.store.requests:
            with self.server.store.lock:
                for request in reversed(self.server.store.requests):
                    if request.code == 0 and request.path == urlparse(self.path).path:
                        request.code = code
                        break
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        content_type = self.headers.get("Content-Type", "")
        return yaml.safe_load(raw) if "yaml" in content_type else json.loads(raw)

    def _handle(self, method: str) -> None:
        store = self.server.store
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            route = parse_route(url.path)
            body = self._body() if method in ("POST", "PUT", "PATCH") else None
            with store.lock:
                request = Request(method, url.path, self.headers.get("Content-Type", ""), query)
                store.requests.append(request)
                for i, (m, fragment, error) in enumerate(store.fail_next):
                    if m == method and fragment in url.path:
                        del store.fail_next[i]
                        raise error
            if method == "GET" and route.name is None and query.get("watch") in ("true", "1"):
                self._watch(route, query)
                return
            manager = query.get("fieldManager")
            with store.lock:
                if method == "GET":
                    if route.name is None:
                        items = store.list(route, query.get("labelSelector"), query.get("fieldSelector"))
                        kind = KINDS.get(route.plural, route.plural)
                        result = {
                            "apiVersion": route.api_version,
                            "kind": f"{kind}List",
                            "metadata": {"resourceVersion": str(store.revision)},
                            "items": copy.deepcopy(items),
                        }
                    else:
                        result = copy.deepcopy(store.get(route))
                        if route.subresource == "scale":
                            result = _scale_of(result)
                    self._send(200, result)
                elif method == "POST" and (route.subresource == "binding" or route.plural == "bindings"):
                    self._send(201, store.bind(route, body))
                elif method == "POST":
                    self._send(201, copy.deepcopy(store.create(route, body, manager or "unknown")))
                elif method == "PUT":
                    self._send(200, copy.deepcopy(store.replace(route, body, manager or "unknown")))
                elif method == "PATCH":
                    content_type = self.headers.get("Content-Type", "")
                    created = store.objects.get(store._key(route)) is None
                    result = store.patch(route, content_type, body, manager, query.get("force") == "true")
                    if route.subresource == "scale":
                        result = _scale_of(result)
                    self._send(201 if created else 200, copy.deepcopy(result))
                elif method == "DELETE":
                    self._send(200, copy.deepcopy(store.delete(route)))
        except ApiError as exc:
            self._send(exc.code, exc.status())

    def _watch(self, route: Route, query: dict[str, str]) -> None:
        store = self.server.store
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        bookmarks = query.get("allowWatchBookmarks") == "true"
        labels, fields = query.get("labelSelector"), query.get("fieldSelector")
        with store.lock:
            for request in reversed(store.requests):
                if request.code == 0 and request.path == route_path(route):
                    request.code = 200
                    break
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            if route.namespace and meta.get("namespace") != route.namespace:
                return False
            return label_matches(meta.get("labels") or {}, labels) and field_matches(obj, fields)

        def send(event: dict[str, Any]) -> None:
            line = (json.dumps(event) + "\n").encode()
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        try:
            with store.lock:
                generation = store.closed_generation
                since = query.get("resourceVersion")
                if since and since != "0" and int(since) < store.compacted:
                    send(
                        {
                            "type": "ERROR",
                            "object": ApiError(
                                410, "Expired", f"too old resource version: {since} ({store.compacted})"
                            ).status(),
                        }
                    )
                    self._end_chunks()
                    return
                if not since or since == "0":
                    initial = [copy.deepcopy(o) for o in store.list(route, labels, fields)]
                    position = store.revision
                else:
                    initial = []
                    position = int(since)
            for obj in initial:
                send({"type": "ADDED", "object": obj})
            for event in self._events(route, position, deadline, generation, bookmarks):
                if event[0] == "BOOKMARK" or matches(event[1]):
                    if event[0] == "BOOKMARK":
                        obj = {
                            "kind": KINDS.get(route.plural, route.plural),
                            "apiVersion": route.api_version,
                            "metadata": {"resourceVersion": event[1]["metadata"]["resourceVersion"]},
                        }
                    else:
                        obj = event[1]
                    send({"type": event[0], "object": obj})
            self._end_chunks()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def _events(
        self, route: Route, position: int, deadline: float, generation: int, bookmarks: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        store = self.server.store
        last_bookmark = time.monotonic()
        while True:
            with store.lock:
                if store.closed_generation != generation:
                    return
                start = bisect.bisect_right(store.history, position, key=lambda entry: entry[0])
                pending = [
                    (kind, obj)
                    for _, collection, kind, obj in store.history[start:]
                    if collection == route.collection
                ]
                position = max(position, store.history[-1][0]) if store.history else position
                if not pending:
                    if store.closed_generation != generation or time.monotonic() >= deadline:
                        return
                    if bookmarks and time.monotonic() - last_bookmark >= self.server.bookmark_interval_s:
                        last_bookmark = time.monotonic()
                        pending = [("BOOKMARK", {"metadata": {"resourceVersion": str(store.revision)}})]
                        position = store.revision
                    else:
                        store.lock.wait(timeout=0.05)
                        continue
            yield from pending

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion") if k in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0)},
    }


class ApiServerDouble(ThreadingHTTPServer):
    """``with ApiServerDouble() as api: client = api.client()``: a loopback server and a real ApiClient."""

    daemon_threads = True

    def __init__(self, bookmark_interval_s: float = 0.2) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = ApiStore()
        self.bookmark_interval_s = bookmark_interval_s
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a watch it stops, a pool connection it drops) is no error here."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def client(self) -> Any:
        from kubernetes import client as k8s

        configuration = k8s.Configuration(host=self.url)
        return k8s.ApiClient(configuration)

    def __enter__(self) -> ApiServerDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close_watches()
        self.shutdown()
        self.server_close()

    # -- direct access for test setup and assertions (no HTTP)
    def put(
        self, api_version: str, plural: str, obj: dict[str, Any], manager: str = "test"
    ) -> dict[str, Any]:
        group, _, version = api_version.rpartition("/")
        route = Route(group, version, plural, (obj.get("metadata") or {}).get("namespace"), None, None)
        with self.store.lock:
            return copy.deepcopy(self.store.create(route, obj, manager))

    def update(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        manager: str = "test",
    ) -> dict[str, Any]:
        group, _, version = api_version.rpartition("/")
        route = Route(group, version, plural, namespace, name, None)
        with self.store.lock:
            return copy.deepcopy(
                self.store.patch(route, "application/merge-patch+json", patch, manager, False)
            )

    def read(self, api_version: str, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        group, _, version = api_version.rpartition("/")
        with self.store.lock:
            return copy.deepcopy(self.store.get(Route(group, version, plural, namespace, name, None)))

    def items(self, api_version: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        group, _, version = api_version.rpartition("/")
        with self.store.lock:
            route = Route(group, version, plural, namespace, None, None)
            return copy.deepcopy(self.store.list(route, None, None))
