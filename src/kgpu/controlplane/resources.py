"""Resource operations of the control plane: validate once, store, delete, read back.

Every write of a resource goes through here (apply and delete alike); what follows a write
(the reconciler's next pass, the event log, watches) listens to the store's changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from kgpu.api.errors import FieldError, ResourceValidationError
from kgpu.api.io import parse_resource
from kgpu.api.models import InferenceService, NodePool
from kgpu.controlplane.store import ResourceStore, StoredResource

KIND_BY_PLURAL = {"inferenceservices": "InferenceService", "nodepools": "NodePool", "clusters": "Cluster"}
PLURAL_BY_KIND = {v: k for k, v in KIND_BY_PLURAL.items()}
# Short names accepted by the CLI, as kubectl accepts `svc`, `po`.
ALIASES = {
    "services": "inferenceservices",
    "service": "inferenceservices",
    "svc": "inferenceservices",
    "inferenceservice": "inferenceservices",
    "isvc": "inferenceservices",
    "nodepool": "nodepools",
    "pool": "nodepools",
    "pools": "nodepools",
    "cluster": "clusters",
}


T = TypeVar("T")


class NotFoundError(Exception):
    pass


# Checks that need more than the resource itself (is the model there?), run at apply time.
AdmissionCheck = Callable[[object], "list[FieldError]"]


@dataclass
class ResourceService:
    store: ResourceStore
    admission: list[AdmissionCheck]
    # (kind, namespace, name) -> (resourceVersion, typed resource); see `parsed`.
    _parsed: dict[tuple[str, str, str], tuple[int, object]] = field(default_factory=dict)

    def apply(
        self, body: dict, namespace: str | None = None, name: str | None = None, create_only: bool = False
    ):
        """Validate and store; returns (stored, created). Raises ResourceValidationError."""
        body, expected = _without_server_fields(body)
        if namespace is not None and isinstance(body.get("metadata"), dict):
            body["metadata"].setdefault("namespace", namespace)
        resource = parse_resource(body)
        meta = resource.metadata
        errors: list[FieldError] = []
        if namespace is not None and meta.namespace != namespace:
            errors.append(
                FieldError(
                    "metadata.namespace",
                    f'Invalid value: "{meta.namespace}": does not match the path namespace "{namespace}"',
                )
            )
        if name is not None and meta.name != name:
            errors.append(
                FieldError(
                    "metadata.name", f'Invalid value: "{meta.name}": does not match the path name "{name}"'
                )
            )
        for check in self.admission:
            errors.extend(check(resource))
        if errors:
            raise ResourceValidationError(errors)
        stored, created = self.store.put(
            resource.kind,
            meta.namespace,
            meta.name,
            resource.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"status"}),
            expected_version=_version(expected),
            create_only=create_only,
        )
        return stored, created

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Remove the resource; raises NotFoundError when there is none."""
        if not self.store.delete(kind, namespace, name):
            raise _not_found(kind, namespace, name)

    def get(self, kind: str, namespace: str, name: str) -> StoredResource:
        stored = self.store.get(kind, namespace, name)
        if stored is None:
            raise _not_found(kind, namespace, name)
        return stored

    def parsed(self, stored: StoredResource):
        """The typed resource of a stored version, validated once per version.

        Lists and the reconciler read every service many times a second; validation was
        most of a LIST's cost. Callers must treat the result as read-only (it is shared).
        """
        key = (stored.kind, stored.namespace, stored.name)
        hit = self._parsed.get(key)
        if hit is not None and hit[0] == stored.resource_version:
            return hit[1]
        resource = parse_resource(stored.body)
        self._parsed[key] = (stored.resource_version, resource)
        return resource

    def services(self) -> list[InferenceService]:
        return self._typed("InferenceService", InferenceService)

    def pools(self) -> list[NodePool]:
        return self._typed("NodePool", NodePool)

    def _typed(self, kind: str, model: type[T]) -> list[T]:
        out = []
        for stored in self.store.list(kind):
            resource = self.parsed(stored)
            assert isinstance(resource, model)
            out.append(resource)
        return out


def _not_found(kind: str, namespace: str, name: str) -> NotFoundError:
    return NotFoundError(f'{PLURAL_BY_KIND.get(kind, kind)} "{name}" not found in namespace "{namespace}"')


SERVER_OWNED_METADATA = ("uid", "resourceVersion", "creationTimestamp")


def _without_server_fields(body: dict) -> tuple[dict, str | None]:
    """Drop what the server owns (so `get -o yaml` output applies again); keep resourceVersion apart."""
    body = {k: v for k, v in body.items() if k != "status"}
    meta = body.get("metadata")
    expected = None
    if isinstance(meta, dict):
        expected = meta.get("resourceVersion")
        body["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_OWNED_METADATA}
    return body, expected


def with_metadata(stored: StoredResource) -> dict:
    """The stored body with the server-owned metadata fields filled in."""
    body = dict(stored.body)
    meta = dict(body.get("metadata", {}))
    meta.update(
        {
            "uid": stored.uid,
            "resourceVersion": str(stored.resource_version),
            "creationTimestamp": stored.created_at,
        }
    )
    body["metadata"] = meta
    return body


def _version(value: object) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise ResourceValidationError(
            [FieldError("metadata.resourceVersion", f'Invalid value: "{value}": must be an integer')]
        ) from None
