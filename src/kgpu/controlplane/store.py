"""Desired state: resources stored as JSON documents in SQLite (default) or PostgreSQL.

Every write bumps the resource's `resourceVersion`; a replace that names an older
version is refused (optimistic concurrency, as the Kubernetes API server does).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Float, Integer, String, Text, UniqueConstraint, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class _Base(DeclarativeBase):
    pass


class _ResourceRow(_Base):
    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("kind", "namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(253))
    uid: Mapped[str] = mapped_column(String(36))
    resource_version: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ConflictError(Exception):
    """A write based on a stale resourceVersion, or a create of an existing name."""


@dataclass
class StoredResource:
    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: int
    body: dict
    created_at: float
    updated_at: float


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite:///{Path(state_dir).resolve() / 'kgpu.db'}"


class ResourceStore:
    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url, future=True)
        if self.engine.dialect.name == "sqlite":
            # WAL lets the CLI read while the server writes; NORMAL sync is durable enough with WAL.
            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        _Base.metadata.create_all(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def _row(self, session: Session, kind: str, namespace: str, name: str) -> _ResourceRow | None:
        return session.scalars(
            select(_ResourceRow).filter_by(kind=kind, namespace=namespace, name=name)
        ).one_or_none()

    def get(self, kind: str, namespace: str, name: str) -> StoredResource | None:
        with self._session() as session:
            row = self._row(session, kind, namespace, name)
            return _to_stored(row) if row else None

    def list(self, kind: str, namespace: str | None = None) -> list[StoredResource]:
        with self._session() as session:
            query = select(_ResourceRow).filter_by(kind=kind)
            if namespace is not None:
                query = query.filter_by(namespace=namespace)
            rows = session.scalars(query.order_by(_ResourceRow.namespace, _ResourceRow.name)).all()
            return [_to_stored(r) for r in rows]

    def put(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: dict,
        expected_version: int | None = None,
        create_only: bool = False,
    ) -> tuple[StoredResource, bool]:
        """Create or replace; returns the stored resource and whether it was created."""
        now = time.time()
        with self._session.begin() as session:
            row = self._row(session, kind, namespace, name)
            if row is None:
                row = _ResourceRow(
                    kind=kind,
                    namespace=namespace,
                    name=name,
                    uid=str(uuid.uuid4()),
                    resource_version=1,
                    body=json.dumps(body),
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                created = True
            else:
                if create_only:
                    raise ConflictError(f'{kind} "{name}" already exists in namespace "{namespace}"')
                if expected_version is not None and expected_version != row.resource_version:
                    raise ConflictError(
                        f'Operation cannot be fulfilled on {kind} "{name}": the object has been modified; '
                        f"please apply your changes to the latest version and try again "
                        f"(resourceVersion {expected_version} != {row.resource_version})"
                    )
                row.body = json.dumps(body)
                row.resource_version += 1
                row.updated_at = now
                created = False
            session.flush()
            return _to_stored(row), created

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        with self._session.begin() as session:
            row = self._row(session, kind, namespace, name)
            if row is None:
                return False
            session.delete(row)
            return True


def _to_stored(row: _ResourceRow) -> StoredResource:
    return StoredResource(
        kind=row.kind,
        namespace=row.namespace,
        name=row.name,
        uid=row.uid,
        resource_version=row.resource_version,
        body=json.loads(row.body),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
