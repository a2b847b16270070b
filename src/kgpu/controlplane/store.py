"""Desired state: resources stored as JSON documents in SQLite (default) or PostgreSQL.

Every write (create, replace, delete) takes the next value of one store-wide revision
counter and stamps it on the resource as its `resourceVersion`, as the Kubernetes API
server does with etcd's revision: versions only grow, across all resources, so a watch
can resume "after version N". A replace that names an older version is refused
(optimistic concurrency).

Reads are served from an in-memory copy of the table, checked against the revision row on
every read: one indexed single-row query instead of fetching and decoding rows, and exact
even when another process writes the same database (a revision this process did not write
makes it reload). Statements are SQLAlchemy Core, built once: the ORM's per-call statement
construction and unit of work cost more CPU than the database itself on a small write.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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


# WAL pages before a writer checkpoints by itself (SQLite's default is 1,000).
AUTOCHECKPOINT_PAGES = 20_000

_RESOURCES = _ResourceRow.__table__
_REVISION = _RevisionRow.__table__
_COLUMNS = (
    _RESOURCES.c.kind,
    _RESOURCES.c.namespace,
    _RESOURCES.c.name,
    _RESOURCES.c.uid,
    _RESOURCES.c.resource_version,
    _RESOURCES.c.body,
    _RESOURCES.c.created_at,
    _RESOURCES.c.updated_at,
)
# Taken first in every write: on PostgreSQL the row lock orders concurrent writers.
_BUMP_REVISION = (
    update(_REVISION)
    .where(_REVISION.c.id == 1)
    .values(value=_REVISION.c.value + 1)
    .returning(_REVISION.c.value)
)
_READ_REVISION = select(_REVISION.c.value).where(_REVISION.c.id == 1)
_REVISION_SQL = "SELECT value FROM revision WHERE id = 1"
_KEY = (
    (_RESOURCES.c.kind == bindparam("k_kind"))
    & (_RESOURCES.c.namespace == bindparam("k_namespace"))
    & (_RESOURCES.c.name == bindparam("k_name"))
)
_FIND = select(_RESOURCES.c.id, *_COLUMNS).where(_KEY)
_ALL = select(*_COLUMNS)
_INSERT = insert(_RESOURCES)
_REPLACE = (
    update(_RESOURCES)
    .where(_RESOURCES.c.id == bindparam("row_id"))
    .values(
        body=bindparam("new_body"),
        resource_version=bindparam("new_version"),
        updated_at=bindparam("new_updated_at"),
    )
)
_DELETE = delete(_RESOURCES).where(_RESOURCES.c.id == bindparam("row_id"))

_Key = tuple[str, str, str]  # kind, namespace, name


@dataclass(frozen=True)
class _Entry:
    """One resource as stored: the body stays JSON text, decoded per read (callers may mutate it)."""

    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: int
    body: str
    created_at: float
    updated_at: float

    def stored(self) -> StoredResource:
        return StoredResource(
            kind=self.kind,
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
            resource_version=self.resource_version,
            body=orjson.loads(self.body),
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class ResourceStore:
    def __init__(self, database_url: str) -> None:
        # A pool as large as the server's worker threads: a connection opened past the pool is
        # closed after one use, and opening one (with its PRAGMAs) costs more than the query.
        self.engine = create_engine(database_url, future=True, pool_size=20, max_overflow=20)
        if self.engine.dialect.name == "sqlite":
            # WAL lets the CLI read while the server writes; NORMAL sync is durable enough with WAL.
            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                # A checkpoint syncs the file: done by the writer that crosses the limit, it
                # stalled that write (and the server's event loop) for tens of milliseconds.
                # The server checkpoints in the background (`checkpoint`); this is the backstop.
                cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
                cursor.close()

        _Base.metadata.create_all(self.engine)
        # Writes of this process commit and notify listeners one at a time, so listeners see
        # changes in revision order (a watch must never deliver version 5 before version 4).
        self._write_lock = threading.Lock()
        self._listeners: list[ChangeListener] = []
        # The in-memory copy and the revision it reflects (None: reload before use). Replaced,
        # never mutated in place, so readers iterate it without a lock.
        self._cache: dict[_Key, _Entry] = {}
        self._cache_revision: int | None = None
        self._cache_lock = threading.Lock()
        self._revision_conn = threading.local()
        self._init_revision()

    def _init_revision(self) -> None:
        try:
            with self.engine.begin() as conn:
                if conn.execute(_READ_REVISION).scalar() is None:
                    # A store written before the counter existed continues above its highest version.
                    highest = conn.execute(select(func.max(_RESOURCES.c.resource_version))).scalar() or 0
                    conn.execute(insert(_REVISION).values(id=1, value=highest))
        except IntegrityError:  # another process sharing the database created it first
            pass

    def add_listener(self, listener: ChangeListener) -> None:
        """Call `listener` after every committed write of this process (under the write lock)."""
        self._listeners.append(listener)

    def revision(self) -> int:
        """The last revision handed out (the store's current resourceVersion)."""
        # Every read asks this first, so it skips the pool and the statement layer: each
        # thread keeps one plain driver connection for it (outside the pool's count), and
        # ends the read transaction at once so it never holds a lock or an old snapshot.
        conn = getattr(self._revision_conn, "conn", None)
        if conn is None:
            conn = self.engine.raw_connection()
            conn.detach()
            self._revision_conn.conn = conn
        cursor = conn.cursor()
        try:
            cursor.execute(_REVISION_SQL)
            row = cursor.fetchone()
        finally:
            cursor.close()
            conn.rollback()
        return int(row[0]) if row else 0

    def checkpoint(self) -> None:
        """Move the SQLite write-ahead log into the database file (a no-op on other databases).

        PASSIVE: never waits for readers or writers, so it can run beside them in a thread.
        """
        if self.engine.dialect.name != "sqlite":
            return
        conn = self.engine.raw_connection()
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    # ---- the in-memory copy ---------------------------------------------------------------
    def _snapshot(self) -> tuple[dict[_Key, _Entry], int]:
        """The resources and the revision they reflect, reloading when another process wrote."""
        current = self.revision()
        with self._cache_lock:
            # Ahead of `current` is fine: this process's own writes landed since the check.
            if self._cache_revision is not None and self._cache_revision >= current:
                return self._cache, self._cache_revision
        with self._write_lock:  # no write of this process lands during the reload
            while True:
                before = self.revision()
                with self.engine.connect() as conn:
                    rows = conn.execute(_ALL).all()
                # A write commits its rows and the revision together: an unchanged revision
                # around the read means the rows are exactly those of that revision.
                if self.revision() == before:
                    break
            cache = {(r.kind, r.namespace, r.name): _Entry(*r) for r in rows}
            with self._cache_lock:
                self._cache, self._cache_revision = cache, before
            return cache, before

    def _remember(self, revision: int, key: _Key, entry: _Entry | None) -> None:
        """Apply this process's committed write to the copy (called under the write lock)."""
        with self._cache_lock:
            if self._cache_revision is None or revision != self._cache_revision + 1:
                self._cache_revision = None  # another process wrote in between: reload on next read
                return
            cache = dict(self._cache)
            if entry is None:
                cache.pop(key, None)
            else:
                cache[key] = entry
            self._cache, self._cache_revision = cache, revision

    # ---- reads ----------------------------------------------------------------------------
    def list_at_revision(self, kind: str, namespace: str | None = None) -> tuple[list[StoredResource], int]:
        """A list and the revision it reflects: no write lands in between."""
        cache, revision = self._snapshot()
        return self._select(cache, kind, namespace), revision

    def get(self, kind: str, namespace: str, name: str) -> StoredResource | None:
        entry = self._snapshot()[0].get((kind, namespace, name))
        return entry.stored() if entry else None

    def list(self, kind: str, namespace: str | None = None) -> list[StoredResource]:
        return self._select(self._snapshot()[0], kind, namespace)

    @staticmethod
    def _select(cache: dict[_Key, _Entry], kind: str, namespace: str | None) -> list[StoredResource]:
        keys = sorted(k for k in cache if k[0] == kind and (namespace is None or k[1] == namespace))
        return [cache[k].stored() for k in keys]

    # ---- writes ---------------------------------------------------------------------------
    def _notify(self, change: Change) -> None:
        for listener in self._listeners:
            listener(change)

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
        text = orjson.dumps(body).decode()
        key = {"k_kind": kind, "k_namespace": namespace, "k_name": name}
        with self._write_lock:
            try:
                with self.engine.begin() as conn:
                    revision = conn.execute(_BUMP_REVISION).scalar_one()
                    row = conn.execute(_FIND, key).first()
                    if row is None:
                        entry = _Entry(kind, namespace, name, str(uuid.uuid4()), revision, text, now, now)
                        conn.execute(_INSERT, [asdict(entry)])  # its fields are the table's columns
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
                        entry = _Entry(kind, namespace, name, row.uid, revision, text, row.created_at, now)
                        conn.execute(
                            _REPLACE,
                            {
                                "row_id": row.id,
                                "new_body": text,
                                "new_version": revision,
                                "new_updated_at": now,
                            },
                        )
                        created = False
            except IntegrityError:
                # Another process created the same name between our read and our insert.
                raise ConflictError(f'{kind} "{name}" already exists in namespace "{namespace}"') from None
            self._remember(revision, (kind, namespace, name), entry)
            stored = entry.stored()
            self._notify(Change("ADDED" if created else "MODIFIED", stored))
        return stored, created

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        key = {"k_kind": kind, "k_namespace": namespace, "k_name": name}
        with self._write_lock:
            with self.engine.begin() as conn:
                revision = conn.execute(_BUMP_REVISION).scalar_one()
                row = conn.execute(_FIND, key).first()
                if row is not None:
                    conn.execute(_DELETE, {"row_id": row.id})
            # The revision is taken either way: a missing row leaves a gap, which watchers never rely on.
            self._remember(revision, (kind, namespace, name), None)
            if row is None:
                return False
            gone = _Entry(kind, namespace, name, row.uid, revision, row.body, row.created_at, row.updated_at)
            self._notify(Change("DELETED", gone.stored()))
        return True
