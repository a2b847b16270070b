"""Kubeconfigs kept by the control plane as secrets: a cluster's credentials, not a path to them.

A `Cluster` with `spec.kubeconfig` names a file on the server: whoever writes it chooses which of
the server's files the server reads, and the errors told which exist. With
`spec.kubeconfigSecret` the Cluster names a kubeconfig stored here instead, sent as content by
`kgpu cluster add` (`PUT .../namespaces/NS/kubeconfigs/NAME`). Under `--auth` only the cluster
admin writes them; the API never returns the content (a list shows names and when they changed),
like a Kubernetes Secret a user may not get.
"""

from __future__ import annotations

import re
import time

import yaml
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Float, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from kgpu import API_VERSION
from kgpu.controlplane.auth import DNS_LABEL, AccessControl

MAX_KUBECONFIG_BYTES = 1024 * 1024
PREFIX = f"/apis/{API_VERSION}/namespaces/{{namespace}}/kubeconfigs"


class _Base(DeclarativeBase):
    pass


class _KubeconfigRow(_Base):
    __tablename__ = "kubeconfig_secrets"

    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    content: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)


class KubeconfigSecrets:
    """The stored kubeconfigs, in the control plane's database."""

    def __init__(self, engine: Engine) -> None:
        _Base.metadata.create_all(engine)
        self._session = sessionmaker(engine, expire_on_commit=False)

    def put(self, namespace: str, name: str, content: str) -> bool:
        """Store (or replace) one; True when it is new."""
        with self._session.begin() as session:
            row = session.get(_KubeconfigRow, (namespace, name))
            if row is None:
                session.add(
                    _KubeconfigRow(namespace=namespace, name=name, content=content, updated_at=time.time())
                )
                return True
            row.content, row.updated_at = content, time.time()
            return False

    def get(self, namespace: str, name: str) -> str | None:
        with self._session() as session:
            row = session.get(_KubeconfigRow, (namespace, name))
            return row.content if row is not None else None

    def listing(self, namespace: str) -> list[dict]:
        with self._session() as session:
            rows = session.scalars(
                select(_KubeconfigRow).filter_by(namespace=namespace).order_by(_KubeconfigRow.name)
            ).all()
            return [_summary(r) for r in rows]

    def delete(self, namespace: str, name: str) -> bool:
        with self._session.begin() as session:
            return session.query(_KubeconfigRow).filter_by(namespace=namespace, name=name).delete() > 0


def _summary(row: _KubeconfigRow) -> dict:
    updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.updated_at))
    return {"name": row.name, "namespace": row.namespace, "updated": updated}


class KubeconfigBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kubeconfig: str = Field(..., max_length=MAX_KUBECONFIG_BYTES, description="the kubeconfig file's content")


def kubeconfig_problem(content: str) -> str | None:
    """Why the content is not a kubeconfig, or None. Says nothing of the content itself (a secret)."""
    try:
        config = yaml.safe_load(content)
    except yaml.YAMLError:
        return "not YAML"
    if not isinstance(config, dict) or not isinstance(config.get("contexts"), list):
        return "not a kubeconfig (no contexts list)"
    if not isinstance(config.get("clusters"), list):
        return "not a kubeconfig (no clusters list)"
    return None


def kubeconfig_routes(secrets: KubeconfigSecrets, access: AccessControl) -> APIRouter:
    api = APIRouter(tags=["clusters"], dependencies=[Depends(access.authorize)])

    def cluster_admin_only(request: Request) -> None:
        access.require_cluster_admin(request, "only the cluster-admin token manages kubeconfigs")

    @api.put(PREFIX + "/{name}", summary="Store a cluster's kubeconfig (cluster admin; never read back)")
    def put(body: KubeconfigBody, request: Request, namespace: str, name: str):
        cluster_admin_only(request)
        for label, value in (("namespace", namespace), ("name", name)):
            if not _is_dns_label(value):
                raise HTTPException(422, f'{label}: Invalid value: "{value[:63]}": must be a DNS label')
        problem = kubeconfig_problem(body.kubeconfig)
        if problem is not None:
            raise HTTPException(422, f"kubeconfig: {problem}")
        created = secrets.put(namespace, name, body.kubeconfig)
        return JSONResponse(
            {"name": name, "namespace": namespace, "status": "created" if created else "replaced"},
            status_code=201 if created else 200,
        )

    @api.get(PREFIX, summary="The stored kubeconfigs' names (never their content)")
    def listing(request: Request, namespace: str) -> dict:
        cluster_admin_only(request)
        return {"items": secrets.listing(namespace)}

    @api.delete(PREFIX + "/{name}", summary="Delete a stored kubeconfig (cluster admin)")
    def delete(request: Request, namespace: str, name: str) -> dict:
        cluster_admin_only(request)
        if not secrets.delete(namespace, name):
            raise HTTPException(404, f'kubeconfig "{name}" not found in namespace "{namespace}"')
        return {"status": "Success"}

    return api


def _is_dns_label(value: str) -> bool:
    return len(value) <= 63 and re.fullmatch(DNS_LABEL, value) is not None
