"""Projects, API tokens and access control of a shared control plane.

A project is a namespace. A token belongs to one project with a role (`admin` may
read and write, `viewer` only reads), or is the cluster-admin token that may do
anything. Tokens are `kgpu_<id>_<secret>`: the id finds the row, the secret is kept
only as a salted PBKDF2 hash, so the database never holds a usable token.

With auth off (`kgpu up`: one user on one machine) the access check allows
everything and the project routes are open, as every other route is.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Float, Integer, String, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from starlette.concurrency import run_in_threadpool

from kgpu import API_VERSION
from kgpu.api.errors import FieldError
from kgpu.api.models import InferenceService
from kgpu.controlplane.resources import ResourceService

ROLES = ("admin", "viewer")
CLUSTER_ADMIN = "cluster-admin"
# Slow on purpose (a stolen database must not give tokens away cheaply); verified tokens are
# cached in memory so that each request does not pay it.
HASH_ITERATIONS = 120_000
CACHE_TTL_S = 60.0
TOKEN_PREFIX = "kgpu_"
READ_METHODS = ("GET", "HEAD", "OPTIONS")
PREFIX = f"/apis/{API_VERSION}"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _AuthBase(DeclarativeBase):
    pass


class _ProjectRow(_AuthBase):
    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    gpu_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class _TokenRow(_AuthBase):
    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str | None] = mapped_column(String(63), nullable=True)  # None: cluster admin
    role: Mapped[str] = mapped_column(String(16))
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a project's admin or viewer, or the cluster admin."""

    token_id: str
    project: str | None
    role: str

    @property
    def cluster_admin(self) -> bool:
        return self.role == CLUSTER_ADMIN

    def can_see(self, namespace: str) -> bool:
        return self.cluster_admin or namespace == self.project


@dataclass(frozen=True)
class Project:
    name: str
    gpu_quota: int | None

    def to_dict(self) -> dict:
        return {"name": self.name, "gpuQuota": self.gpu_quota}


class AuthError(ValueError):
    pass


def hash_secret(secret: str, salt: bytes) -> str:
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, HASH_ITERATIONS).hex()


class AuthStore:
    """Projects and hashed tokens, in the same database as the resources."""

    def __init__(self, engine: Engine) -> None:
        _AuthBase.metadata.create_all(engine)
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------ projects

    def create_project(self, name: str, gpu_quota: int | None = None) -> Project:
        try:
            with self._session.begin() as session:
                session.add(_ProjectRow(name=name, gpu_quota=gpu_quota, created_at=time.time()))
        except IntegrityError:
            raise AuthError(f'project "{name}" already exists') from None
        return Project(name, gpu_quota)

    def set_quota(self, name: str, gpu_quota: int | None) -> Project:
        with self._session.begin() as session:
            row = session.get(_ProjectRow, name)
            if row is None:
                raise AuthError(f'project "{name}" not found')
            row.gpu_quota = gpu_quota
        return Project(name, gpu_quota)

    def project(self, name: str) -> Project | None:
        with self._session() as session:
            row = session.get(_ProjectRow, name)
            return Project(row.name, row.gpu_quota) if row else None

    def projects(self) -> list[Project]:
        with self._session() as session:
            rows = session.scalars(select(_ProjectRow).order_by(_ProjectRow.name)).all()
            return [Project(r.name, r.gpu_quota) for r in rows]

    # ------------------------------------------------------------ tokens

    def create_token(self, project: str | None, role: str) -> str:
        """A new token (returned once, never stored): `role` in a project, or the cluster admin."""
        if project is None:
            role = CLUSTER_ADMIN
        elif role not in ROLES:
            raise AuthError(f'role: Unsupported value: "{role}": supported values: "admin", "viewer"')
        elif self.project(project) is None:
            raise AuthError(f'project "{project}" not found')
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = os.urandom(16)
        with self._session.begin() as session:
            session.add(
                _TokenRow(
                    token_id=token_id,
                    project=project,
                    role=role,
                    salt=salt.hex(),
                    secret_hash=hash_secret(secret, salt),
                    created_at=time.time(),
                )
            )
        return f"{TOKEN_PREFIX}{token_id}_{secret}"

    def has_cluster_admin(self) -> bool:
        with self._session() as session:
            return session.scalars(select(_TokenRow).filter_by(role=CLUSTER_ADMIN)).first() is not None

    def verify(self, token: str) -> Principal | None:
        """The principal of a valid token, or None."""
        # The in-memory cache key is a fast digest: it never leaves this process.
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached and cached[0] > now:
                return cached[1]
        token_id, _, secret = token.removeprefix(TOKEN_PREFIX).partition("_")
        if not token.startswith(TOKEN_PREFIX) or not secret:
            return None
        with self._session() as session:
            row = session.get(_TokenRow, token_id)
        if row is None or not hmac.compare_digest(
            hash_secret(secret, bytes.fromhex(row.salt)), row.secret_hash
        ):
            return None
        principal = Principal(row.token_id, row.project, row.role)
        with self._cache_lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + CACHE_TTL_S, principal)
        return principal


def bootstrap_cluster_admin(store: AuthStore, state_dir: Path) -> str | None:
    """Create the cluster-admin token on first start; write it to `<state-dir>/admin-token` (0600).

    Returns the token when it was created now (to print once), None when one already exists.
    """
    if store.has_cluster_admin():
        return None
    token = store.create_token(None, CLUSTER_ADMIN)
    path = Path(state_dir) / "admin-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)  # also when the file existed with looser permissions
    return token


# ---------------------------------------------------------------- quota


def _gpus_wanted(service: InferenceService) -> int:
    request = service.gpu_request()
    if request is None:
        return 0
    replicas = service.spec.autoscaling.max_replicas if service.spec.autoscaling else service.spec.replicas
    return replicas * request[1]


def quota_check(auth: AuthStore, resources: ResourceService):
    """An admission check: a service must fit in its project's GPU quota with the others."""

    def check(resource: object) -> list[FieldError]:
        if not isinstance(resource, InferenceService):
            return []
        namespace, name = resource.metadata.namespace, resource.metadata.name
        project = auth.project(namespace)
        if project is None or project.gpu_quota is None:
            return []
        requested = _gpus_wanted(resource)
        if requested == 0:
            return []
        in_use = sum(
            _gpus_wanted(other)
            for other in resources.services()
            if other.metadata.namespace == namespace and other.metadata.name != name
        )
        if requested + in_use <= project.gpu_quota:
            return []
        path = "spec.autoscaling.maxReplicas" if resource.spec.autoscaling else "spec.replicas"
        return [
            FieldError(
                path,
                f'exceeds project "{namespace}" GPU quota: {requested} requested + {in_use} in use '
                f"> {project.gpu_quota}",
            )
        ]

    return check


# ---------------------------------------------------------------- HTTP


class ProjectBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(..., max_length=63, pattern=DNS_LABEL)
    gpu_quota: int | None = Field(None, alias="gpuQuota", ge=0, le=1_000_000)


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    gpu_quota: int | None = Field(None, alias="gpuQuota", ge=0, le=1_000_000)


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(..., pattern="^(admin|viewer)$")


def principal_of(request: Request) -> Principal | None:
    """The caller, or None when auth is off."""
    return getattr(request.state, "principal", None)


def visible(request: Request, namespace: str) -> bool:
    principal = principal_of(request)
    return principal is None or principal.can_see(namespace)


class AccessControl:
    """The access check (a FastAPI dependency) and the project/token routes."""

    def __init__(self, store: AuthStore, enabled: bool) -> None:
        self.store = store
        self.enabled = enabled

    async def authorize(self, request: Request) -> None:
        if not self.enabled:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401,
                "this server needs an API token: send `Authorization: Bearer <token>` (`kgpu login`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = await run_in_threadpool(self.store.verify, token.strip())
        if principal is None:
            raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = principal
        if principal.cluster_admin:
            return
        namespace = request.path_params.get("namespace")
        if namespace is not None and namespace != principal.project:
            raise HTTPException(
                403, f'a token of project "{principal.project}" cannot access project "{namespace}"'
            )
        if request.method not in READ_METHODS and principal.role != "admin":
            raise HTTPException(
                403, f'role "{principal.role}" in project "{principal.project}" can only read (needs admin)'
            )

    def _require_cluster_admin(self, request: Request) -> None:
        principal = principal_of(request)
        if principal is not None and not principal.cluster_admin:
            raise HTTPException(403, "only the cluster-admin token manages projects")

    def routes(self) -> APIRouter:
        api = APIRouter(tags=["projects"], dependencies=[Depends(self.authorize)])

        @api.get(PREFIX + "/projects", summary="Projects the caller can see")
        def list_projects(request: Request) -> dict:
            return {"items": [p.to_dict() for p in self.store.projects() if visible(request, p.name)]}

        @api.post(PREFIX + "/projects", status_code=201, summary="Create a project (cluster admin)")
        def create_project(body: ProjectBody, request: Request) -> dict:
            self._require_cluster_admin(request)
            try:
                return self.store.create_project(body.name, body.gpu_quota).to_dict()
            except AuthError as exc:
                raise HTTPException(409, str(exc)) from None

        @api.get(PREFIX + "/projects/{project}", summary="A project and its GPU quota")
        def read_project(request: Request, project: str) -> dict:
            found = self.store.project(project)
            if found is None or not visible(request, project):
                raise HTTPException(404, f'project "{project}" not found')
            return found.to_dict()

        @api.patch(PREFIX + "/projects/{project}", summary="Set a project's GPU quota (cluster admin)")
        def set_quota(body: QuotaBody, request: Request, project: str) -> dict:
            self._require_cluster_admin(request)
            try:
                return self.store.set_quota(project, body.gpu_quota).to_dict()
            except AuthError as exc:
                raise HTTPException(404, str(exc)) from None

        @api.post(
            PREFIX + "/projects/{project}/tokens",
            status_code=201,
            summary="Create an API token for a project (shown once)",
        )
        def create_token(body: TokenBody, request: Request, project: str) -> dict:
            principal = principal_of(request)
            if principal is not None and not (
                principal.cluster_admin or (principal.project == project and principal.role == "admin")
            ):
                raise HTTPException(403, f'only an admin of project "{project}" can create its tokens')
            if self.store.project(project) is None:
                raise HTTPException(404, f'project "{project}" not found')
            token = self.store.create_token(project, body.role)
            return {"project": project, "role": body.role, "token": token}

        return api
