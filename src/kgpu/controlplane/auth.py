"""Projects, API tokens and access control of a shared control plane.

A project is a namespace. A token belongs to one project with a role (`admin` may
read and write, `viewer` only reads), or is the cluster-admin token that may do
anything. Tokens are `kgpu_<id>_<secret>`: the id finds the row, the secret is kept
only as a salted PBKDF2 hash, so the database never holds a usable token. A project's
admin lists its tokens (name, role, created, last used) and revokes them; a revoked
token is refused at its next request, by this server and by any other sharing the database.

With auth off (`kgpu up`: one user on one machine) the access check allows
everything and the project routes are open, as every other route is.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import BigInteger, Boolean, Float, Integer, String, bindparam, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from starlette.concurrency import run_in_threadpool

from kgpu import API_VERSION, auth_failures
from kgpu.api.errors import FieldError
from kgpu.api.models import Cluster
from kgpu.auth_failures import FailureLimiter, TooManyFailures
from kgpu.controlplane.quota import HARD_KEYS, HardLimits

ROLES = ("admin", "viewer")
CLUSTER_ADMIN = "cluster-admin"
# Reads /metrics and the Prometheus targets of every project, and nothing else (Prometheus's token).
METRICS_READER = "metrics-reader"
METRICS_PATHS = ("/metrics", f"/apis/{API_VERSION}/prometheus/targets")
# How secrets are hashed: `hmac-sha256` now; PBKDF2 (a NULL scheme) in databases of earlier releases.
HMAC_SCHEME = "hmac-sha256"
LEGACY_PBKDF2_ITERATIONS = 120_000
# "Last used" is written at most this often per token (a write per request would cost more than the read).
LAST_USED_RESOLUTION_S = 60.0
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
    # ResourceQuota's requests.cpu (milli-CPU), requests.memory (bytes) and count/replicas; None: no limit.
    cpu_quota_milli: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    memory_quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    replica_quota: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Whether the project's services may name model paths on the server (`pkg:` always works).
    local_model_paths: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class _TokenRow(_AuthBase):
    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str | None] = mapped_column(String(63), nullable=True)  # None: cluster admin
    role: Mapped[str] = mapped_column(String(16))
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float)
    name: Mapped[str | None] = mapped_column(String(63), nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    hash_scheme: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None: legacy PBKDF2


# Columns added after the first release: databases made before them get them on start.
_ADDED_COLUMNS = {
    "api_tokens": {"name": "VARCHAR(63)", "last_used_at": "FLOAT", "hash_scheme": "VARCHAR(16)"},
    "projects": {
        "cpu_quota_milli": "BIGINT",
        "memory_quota_bytes": "BIGINT",
        "replica_quota": "BIGINT",
        "local_model_paths": "BOOLEAN",
    },
}


def _add_missing_columns(engine: Engine) -> None:
    for table, columns in _ADDED_COLUMNS.items():
        present = {c["name"] for c in inspect(engine).get_columns(table)}
        missing = [(n, t) for n, t in columns.items() if n not in present]
        if missing:
            with engine.begin() as conn:
                for column, sql_type in missing:
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))


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

    def administers(self, project: str) -> bool:
        return self.cluster_admin or (self.project == project and self.role == "admin")

    @property
    def reads_metrics(self) -> bool:
        """May read every project's metrics and scrape targets."""
        return self.cluster_admin or self.role == METRICS_READER


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token: never its secret or hash."""

    token_id: str
    name: str
    project: str
    role: str
    created_at: float
    last_used_at: float | None

    def to_dict(self) -> dict:
        return {
            "id": self.token_id,
            "name": self.name,
            "project": self.project,
            "role": self.role,
            "created": _iso(self.created_at),
            "lastUsed": _iso(self.last_used_at) if self.last_used_at is not None else None,
        }


def default_token_name(role: str, token_id: str) -> str:
    return f"{role}-{token_id[:6]}"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True)
class Project:
    name: str
    gpu_quota: int | None
    hard: HardLimits = field(default_factory=HardLimits)
    local_model_paths: bool = False

    def to_dict(self) -> dict:
        hard = self.hard.to_hard()
        return {
            "name": self.name,
            "gpuQuota": self.gpu_quota,
            **({"hard": hard} if hard else {}),
            **({"localModelPaths": True} if self.local_model_paths else {}),
        }


def _project(row) -> Project:
    hard = HardLimits(row.cpu_quota_milli, row.memory_quota_bytes, row.replica_quota)
    return Project(row.name, row.gpu_quota, hard, bool(row.local_model_paths))


class AuthError(ValueError):
    pass


def hash_secret(secret: str, key: bytes) -> str:
    """The stored form of a token's secret: HMAC-SHA-256 keyed with the token's random key."""
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def legacy_hash_secret(secret: str, salt: bytes) -> str:
    """PBKDF2, how earlier releases stored secrets (checked once, then rewritten with `hash_secret`)."""
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, LEGACY_PBKDF2_ITERATIONS).hex()


# What an unknown token id is checked against, so that it takes as long as a known one.
_NO_SUCH_KEY = os.urandom(16)
_NO_SUCH_HASH = hash_secret(secrets.token_urlsafe(32), _NO_SUCH_KEY)


_PROJECTS = _ProjectRow.__table__
_PROJECT_BY_NAME = select(_PROJECTS).where(_PROJECTS.c.name == bindparam("p_name"))


class AuthStore:
    """Projects and hashed tokens, in the same database as the resources."""

    def __init__(self, engine: Engine) -> None:
        _AuthBase.metadata.create_all(engine)
        _add_missing_columns(engine)
        self._engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)

    # ------------------------------------------------------------ projects

    def create_project(
        self,
        name: str,
        gpu_quota: int | None = None,
        hard: HardLimits = HardLimits(),
        local_model_paths: bool = False,
    ) -> Project:
        row = _ProjectRow(
            name=name,
            gpu_quota=gpu_quota,
            created_at=time.time(),
            local_model_paths=local_model_paths,
            **_hard_columns(hard),
        )
        try:
            with self._session.begin() as session:
                session.add(row)
        except IntegrityError:
            raise AuthError(f'project "{name}" already exists') from None
        return Project(name, gpu_quota, hard, local_model_paths)

    def set_quota(
        self,
        name: str,
        gpu_quota: int | None,
        hard: HardLimits | None = None,
        local_model_paths: bool | None = None,
    ) -> Project:
        """Set the GPU quota, and the CPU/memory/replica limits and local-path setting when given."""
        with self._session.begin() as session:
            row = session.get(_ProjectRow, name)
            if row is None:
                raise AuthError(f'project "{name}" not found')
            row.gpu_quota = gpu_quota
            for column, value in _hard_columns(hard).items() if hard is not None else ():
                setattr(row, column, value)
            if local_model_paths is not None:
                row.local_model_paths = local_model_paths
            return _project(row)

    def local_paths_allowed(self, namespace: str) -> bool:
        """Whether the namespace's services may name model paths on the server (a namespace that is
        no project: only the cluster admin writes there)."""
        project = self.project(namespace)
        return project is None or project.local_model_paths

    def project(self, name: str) -> Project | None:
        # Core, not the ORM: every service write reads its project (the quota check).
        with self._engine.connect() as conn:
            row = conn.execute(_PROJECT_BY_NAME, {"p_name": name}).first()
        return _project(row) if row else None

    def projects(self) -> list[Project]:
        with self._session() as session:
            rows = session.scalars(select(_ProjectRow).order_by(_ProjectRow.name)).all()
            return [_project(r) for r in rows]

    # ------------------------------------------------------------ tokens

    def create_token(self, project: str | None, role: str, name: str | None = None) -> str:
        """A new token (returned once, never stored): `role` in a project, or the cluster admin.

        `name` (unique in the project) says what the token is for; it defaults to `<role>-<id>`.
        """
        if project is None:
            role = METRICS_READER if role == METRICS_READER else CLUSTER_ADMIN
        elif role not in ROLES:
            raise AuthError(f'role: Unsupported value: "{role}": supported values: "admin", "viewer"')
        elif self.project(project) is None:
            raise AuthError(f'project "{project}" not found')
        token_id = secrets.token_hex(8)
        name = name or default_token_name(role, token_id)
        if project is not None and self._find_token(project, name) is not None:
            raise AuthError(f'name: a token named "{name}" already exists in project "{project}"')
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
                    hash_scheme=HMAC_SCHEME,
                    created_at=time.time(),
                    name=name,
                )
            )
        return f"{TOKEN_PREFIX}{token_id}_{secret}"

    def tokens(self, project: str) -> list[TokenInfo]:
        """A project's tokens, oldest first."""
        with self._session() as session:
            rows = session.scalars(
                select(_TokenRow).filter_by(project=project).order_by(_TokenRow.created_at)
            ).all()
            return [_info(r) for r in rows]

    def _find_token(self, project: str, id_or_name: str) -> _TokenRow | None:
        with self._session() as session:
            row = session.get(_TokenRow, id_or_name)
            if row is not None and row.project == project:
                return row
            return session.scalars(select(_TokenRow).filter_by(project=project, name=id_or_name)).first()

    def revoke(self, project: str, id_or_name: str) -> TokenInfo | None:
        """Delete a project's token (by id or name); None when the project has no such token."""
        row = self._find_token(project, id_or_name)
        if row is None:
            return None
        with self._session.begin() as session:
            session.query(_TokenRow).filter_by(token_id=row.token_id).delete()
        return _info(row)

    def has_cluster_admin(self) -> bool:
        return self.has_role(CLUSTER_ADMIN)

    def has_role(self, role: str) -> bool:
        with self._session() as session:
            return session.scalars(select(_TokenRow).filter_by(role=role)).first() is not None

    def verify(self, token: str, slow_hash_allowed: bool = True) -> Principal | None:
        """The principal of a valid token, or None.

        The row is read on every call (a primary-key lookup), so a token revoked here or by
        another server on the same database is refused at once. An unknown id is hashed and
        compared as a known one is, so the answer's timing does not tell which ids exist.
        `slow_hash_allowed`: whether a token still stored with PBKDF2 may be checked now.
        """
        token_id, _, secret = token.removeprefix(TOKEN_PREFIX).partition("_")
        if not token.startswith(TOKEN_PREFIX) or not secret:
            return None
        with self._session() as session:
            row = session.get(_TokenRow, token_id)
        if row is None:
            hmac.compare_digest(hash_secret(secret, _NO_SUCH_KEY), _NO_SUCH_HASH)  # a known id's work
            return None
        if row.hash_scheme == HMAC_SCHEME:
            if not hmac.compare_digest(hash_secret(secret, bytes.fromhex(row.salt)), row.secret_hash):
                return None
        elif not (slow_hash_allowed and self._migrate_legacy(row, secret)):
            return None
        wall = time.time()
        if row.last_used_at is None or wall - row.last_used_at >= LAST_USED_RESOLUTION_S:
            with self._session.begin() as session:
                session.query(_TokenRow).filter_by(token_id=row.token_id).update({"last_used_at": wall})
        return Principal(row.token_id, row.project, row.role)

    def _migrate_legacy(self, row: _TokenRow, secret: str) -> bool:
        """Check a PBKDF2-hashed secret; when it is right, store it with HMAC-SHA-256 from now on."""
        try:
            salt = bytes.fromhex(row.salt)
        except ValueError:
            return False
        if not hmac.compare_digest(legacy_hash_secret(secret, salt), row.secret_hash):
            return False
        with self._session.begin() as session:
            session.query(_TokenRow).filter_by(token_id=row.token_id).update(
                {"secret_hash": hash_secret(secret, salt), "hash_scheme": HMAC_SCHEME}
            )
        return True


class TokenGuard:
    """Token checks with limited failures: what both the API and the gateway call."""

    def __init__(self, store: AuthStore, limiter: FailureLimiter | None = None) -> None:
        self.store = store
        self.limiter = limiter or FailureLimiter()

    def check(self, token: str, address: str) -> Principal | None:
        """The token's principal, or None (401); raises TooManyFailures (429) past a failure budget."""
        self.limiter.check_address(address)
        token_id = token.removeprefix(TOKEN_PREFIX).partition("_")[0][:32]
        principal = self.store.verify(token, slow_hash_allowed=not self.limiter.token_id_blocked(token_id))
        if principal is None:
            self.limiter.failed(address, token_id)
        return principal


def _hard_columns(hard: HardLimits) -> dict[str, int | None]:
    return {
        "cpu_quota_milli": hard.cpu_milli,
        "memory_quota_bytes": hard.memory_bytes,
        "replica_quota": hard.replicas,
    }


def _info(row: _TokenRow) -> TokenInfo:
    return TokenInfo(
        row.token_id,
        row.name or default_token_name(row.role, row.token_id),
        row.project or "",
        row.role,
        row.created_at,
        row.last_used_at,
    )


def bootstrap_cluster_admin(store: AuthStore, state_dir: Path) -> str | None:
    """Create the cluster-admin token on first start; write it to `<state-dir>/admin-token` (0600).

    Returns the token when it was created now (to print once), None when one already exists.
    """
    return _bootstrap(store, Path(state_dir) / "admin-token", CLUSTER_ADMIN)


def bootstrap_metrics_token(store: AuthStore, state_dir: Path) -> Path:
    """Create Prometheus's token on first start, in `<state-dir>/metrics-token` (0600); its path.

    `kgpu prometheus-config --token-file` points Prometheus at that file.
    """
    path = Path(state_dir) / "metrics-token"
    _bootstrap(store, path, METRICS_READER)
    return path


def _bootstrap(store: AuthStore, path: Path, role: str) -> str | None:
    if store.has_role(role):
        return None
    token = store.create_token(None, role)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)  # also when the file existed with looser permissions
    return token


# ---------------------------------------------------------------- HTTP


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    gpu_quota: int | None = Field(None, alias="gpuQuota", ge=0, le=1_000_000)
    hard: dict[str, str | int] | None = Field(
        None,
        description='ResourceQuota limits: "requests.cpu", "requests.memory", "count/replicas"',
        max_length=len(HARD_KEYS),
    )
    local_model_paths: bool | None = Field(
        None, alias="localModelPaths", description="services may name model paths on the server"
    )

    def hard_limits(self) -> HardLimits | None:
        """The limits in `hard` (None when the body leaves them as they are); 422 naming a bad entry."""
        if self.hard is None:
            return None
        limits, errors = HardLimits.parse(self.hard)
        if errors:
            raise HTTPException(422, "; ".join(f"{e.path}: {e.message}" for e in errors))
        return limits


class ProjectBody(QuotaBody):
    name: str = Field(..., max_length=63, pattern=DNS_LABEL)


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(..., pattern="^(admin|viewer)$")
    name: str | None = Field(None, max_length=63, pattern=DNS_LABEL, description="what the token is for")


# The caller of the request being handled (None when auth is off): admission checks read it.
CALLER: ContextVar[Principal | None] = ContextVar("kgpu_caller", default=None)


def cluster_registration_check(resource: object) -> list[FieldError]:
    """Admission: only the cluster admin registers a Kubernetes cluster. Its kubeconfig reaches a real
    cluster (and the server's files), and it takes over where the namespace's services run, so a
    project's admin must not set one up; `sim` and `local` clusters run nothing anywhere else."""
    caller = CALLER.get()
    if caller is None or caller.cluster_admin:
        return []
    if isinstance(resource, Cluster) and resource.spec.backend == "kubernetes":
        return [
            FieldError(
                "spec.backend", "Forbidden: only the cluster-admin token registers Kubernetes clusters"
            )
        ]
    return []


def principal_of(request: Request) -> Principal | None:
    """The caller, or None when auth is off."""
    return getattr(request.state, "principal", None)


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def reads_metrics(request: Request) -> bool:
    """The caller may read every project's scrape targets (the metrics or cluster-admin token)."""
    principal = principal_of(request)
    return principal is not None and principal.reads_metrics


def visible(request: Request, namespace: str) -> bool:
    principal = principal_of(request)
    return principal is None or principal.can_see(namespace)


class AccessControl:
    """The access check (a FastAPI dependency) and the project/token routes."""

    def __init__(self, store: AuthStore, enabled: bool) -> None:
        self.store = store
        self.enabled = enabled
        self.guard = TokenGuard(store)

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
        try:
            principal = await run_in_threadpool(self.guard.check, token.strip(), client_address(request))
        except TooManyFailures as exc:
            await asyncio.sleep(auth_failures.FAILURE_DELAY_S)
            raise HTTPException(429, str(exc), headers={"Retry-After": exc.retry_after_header}) from None
        if principal is None:
            await asyncio.sleep(auth_failures.FAILURE_DELAY_S)
            raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = principal
        CALLER.set(principal)  # what admission checks see of the caller (the write runs in this context)
        if principal.cluster_admin:
            return
        if principal.role == METRICS_READER:
            if request.method != "GET" or request.url.path not in METRICS_PATHS:
                raise HTTPException(403, "the metrics token reads only /metrics and the Prometheus targets")
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

    async def authorize_metrics(self, request: Request) -> None:
        """`/metrics` lists every project's services: the cluster admin's or Prometheus's token only."""
        await self.authorize(request)
        principal = principal_of(request)
        if principal is not None and not principal.reads_metrics:
            raise HTTPException(403, "/metrics needs the metrics token (<state-dir>/metrics-token)")

    def inference_caller(self, token: str, address: str) -> Principal | None:
        """The gateway's check: a project's or the cluster admin's token (the metrics token calls nothing)."""
        principal = self.guard.check(token, address)
        return None if principal is not None and principal.role == METRICS_READER else principal

    def _require_cluster_admin(self, request: Request) -> None:
        self.require_cluster_admin(request, "only the cluster-admin token manages projects")

    @staticmethod
    def require_cluster_admin(request: Request, message: str) -> None:
        principal = principal_of(request)
        if principal is not None and not principal.cluster_admin:
            raise HTTPException(403, message)

    def routes(self) -> APIRouter:
        api = APIRouter(tags=["projects"], dependencies=[Depends(self.authorize)])

        @api.get(PREFIX + "/projects", summary="Projects the caller can see")
        def list_projects(request: Request) -> dict:
            return {"items": [p.to_dict() for p in self.store.projects() if visible(request, p.name)]}

        @api.post(PREFIX + "/projects", status_code=201, summary="Create a project (cluster admin)")
        def create_project(body: ProjectBody, request: Request) -> dict:
            self._require_cluster_admin(request)
            try:
                return self.store.create_project(
                    body.name,
                    body.gpu_quota,
                    body.hard_limits() or HardLimits(),
                    bool(body.local_model_paths),
                ).to_dict()
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
                return self.store.set_quota(
                    project, body.gpu_quota, body.hard_limits(), body.local_model_paths
                ).to_dict()
            except AuthError as exc:
                raise HTTPException(404, str(exc)) from None

        @api.post(
            PREFIX + "/projects/{project}/tokens",
            status_code=201,
            summary="Create an API token for a project (shown once)",
        )
        def create_token(body: TokenBody, request: Request, project: str) -> dict:
            self._require_project_admin(request, project, "create its tokens")
            try:
                token = self.store.create_token(project, body.role, body.name)
            except AuthError as exc:
                raise HTTPException(409, str(exc)) from None
            name = body.name or default_token_name(body.role, token.removeprefix(TOKEN_PREFIX)[:6])
            return {"project": project, "role": body.role, "name": name, "token": token}

        @api.get(
            PREFIX + "/projects/{project}/tokens",
            summary="A project's API tokens: name, role, created, last used (never the secret)",
        )
        def list_tokens(request: Request, project: str) -> dict:
            self._require_project_admin(request, project, "list its tokens")
            return {"items": [t.to_dict() for t in self.store.tokens(project)]}

        @api.delete(
            PREFIX + "/projects/{project}/tokens/{token}",
            summary="Revoke a project's API token (by id or name); it is refused from the next request on",
        )
        def revoke_token(request: Request, project: str, token: str) -> dict:
            self._require_project_admin(request, project, "revoke its tokens")
            revoked = self.store.revoke(project, token)
            if revoked is None:
                raise HTTPException(404, f'project "{project}" has no token "{token}"')
            return {"status": "Success", "revoked": revoked.to_dict()}

        return api

    def _require_project_admin(self, request: Request, project: str, action: str) -> None:
        principal = principal_of(request)
        if principal is not None and not principal.administers(project):
            raise HTTPException(403, f'only an admin of project "{project}" can {action}')
        if self.store.project(project) is None:
            raise HTTPException(404, f'project "{project}" not found')
