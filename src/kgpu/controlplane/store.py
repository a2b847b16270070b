"""Desired state: resources stored as JSON documents in SQLite (default) or PostgreSQL.

Every write (create, replace, delete) takes the next value of one store-wide revision
counter and stamps it on the resource as its `resourceVersion`, as the Kubernetes API
server does with etcd's revision: versions only grow, across all resources, so a watch
can resume "after version N". A replace that names an older version is refused
(optimistic concurrency).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
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
    resource_version: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class _RevisionRow(_Base):
    """One row: the last revision handed out. Updating it also serializes writers across processes."""

    __tablename__ = "revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


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


@dataclass
class Change:
    """One committed write, in revision order: `ADDED`, `MODIFIED` or `DELETED` (watch event types)."""

    type: str
    resource: StoredResource


ChangeListener = Callable[[Change], None]


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
        # Writes of this process commit and notify listeners one at a time, so listeners see
        # changes in revision order (a watch must never deliver version 5 before version 4).
        self._write_lock = threading.Lock()
        self._listeners: list[ChangeListener] = []
        self._init_revision()

    def _init_revision(self) -> None:
        try:
            with self._session.begin() as session:
                if session.get(_RevisionRow, 1) is None:
                    # A store written before the counter existed continues above its highest version.
                    highest = session.scalar(select(func.max(_ResourceRow.resource_version))) or 0
                    session.add(_RevisionRow(id=1, value=highest))
        except IntegrityError:  # another process sharing the database created it first
            pass

    def add_listener(self, listener: ChangeListener) -> None:
        """Call `listener` after every committed write of this process (under the write lock)."""
        self._listeners.append(listener)

    def revision(self) -> int:
        """The last revision handed out (the store's current resourceVersion)."""
        with self._session() as session:
            return session.scalar(select(_RevisionRow.value).filter_by(id=1)) or 0

    def list_at_revision(self, kind: str, namespace: str | None = None) -> tuple[list[StoredResource], int]:
        """A list and the revision it reflects: no write of this process lands in between."""
        with self._write_lock:
            return self.list(kind, namespace), self.revision()

    @staticmethod
    def _next_revision(session: Session) -> int:
        # Taken first in every write: on PostgreSQL the row lock orders concurrent writers.
        session.execute(update(_RevisionRow).filter_by(id=1).values(value=_RevisionRow.value + 1))
        return session.scalar(select(_RevisionRow.value).filter_by(id=1))

    def _notify(self, change: Change) -> None:
        for listener in self._listeners:
            listener(change)

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
        with self._write_lock:
            try:
                with self._session.begin() as session:
                    revision = self._next_revision(session)
                    row = self._row(session, kind, namespace, name)
                    if row is None:
                        row = _ResourceRow(
                            kind=kind,
                            namespace=namespace,
                            name=name,
                            uid=str(uuid.uuid4()),
                            resource_version=revision,
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
                        row.resource_version = revision
                        row.updated_at = now
                        created = False
                    session.flush()
                    stored = _to_stored(row)
            except IntegrityError:
                # Another process created the same name between our read and our insert.
                raise ConflictError(f'{kind} "{name}" already exists in namespace "{namespace}"') from None
            self._notify(Change("ADDED" if created else "MODIFIED", stored))
        return stored, created

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        with self._write_lock:
            with self._session.begin() as session:
                revision = self._next_revision(session)
                row = self._row(session, kind, namespace, name)
                if row is None:
                    return False  # the unused revision leaves a gap, which watchers never rely on
                session.delete(row)
                stored = _to_stored(row)
                stored.resource_version = revision
            self._notify(Change("DELETED", stored))
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
