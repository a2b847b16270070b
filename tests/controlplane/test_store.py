"""The resource store on SQLite (WAL) and on a real PostgreSQL server.

The PostgreSQL variant needs `KGPU_TEST_POSTGRES_URL` (e.g.
`postgresql+psycopg://kgpu:kgpu@127.0.0.1/kgpu_test`, what `.ci/run` exports); each test
gets its own schema there, dropped afterwards, so runs never see each other's rows.
"""

from __future__ import annotations

import os
import threading

import pytest

from kgpu.controlplane.store import Change, ConflictError, ResourceStore, sqlite_url

POSTGRES_URL = os.environ.get("KGPU_TEST_POSTGRES_URL")


def body(name: str, replicas: int = 1) -> dict:
    return {"kind": "InferenceService", "metadata": {"name": name}, "spec": {"replicas": replicas}}


@pytest.fixture
def sqlite_store(tmp_path):
    return lambda: ResourceStore(sqlite_url(tmp_path))


@pytest.fixture
def postgresql_store(postgresql_database_url):
    """Stores over one throwaway PostgreSQL schema (see conftest.py), disposed before it is dropped."""
    stores: list[ResourceStore] = []

    def make() -> ResourceStore:
        stores.append(ResourceStore(postgresql_database_url))
        return stores[-1]

    yield make
    for store in stores:
        store.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request):
    """A factory: calling it twice gives two stores over the same database (a restart)."""
    return request.getfixturevalue(f"{request.param}_store")


def test_sqlite_runs_in_wal_mode(sqlite_store):
    store = sqlite_store()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_create_get_list_and_delete(make_store):
    store = make_store()
    created, was_created = store.put("InferenceService", "default", "a", body("a"))
    assert was_created and created.resource_version == 1
    store.put("InferenceService", "team-b", "b", body("b"))
    store.put("NodePool", "default", "a", {"kind": "NodePool"})
    assert store.get("InferenceService", "default", "a").body == body("a")
    assert store.get("InferenceService", "default", "missing") is None
    assert [r.name for r in store.list("InferenceService")] == ["a", "b"]
    assert [r.name for r in store.list("InferenceService", "team-b")] == ["b"]
    assert store.delete("InferenceService", "default", "a") is True
    assert store.delete("InferenceService", "default", "a") is False
    assert store.get("InferenceService", "default", "a") is None
    assert store.get("NodePool", "default", "a") is not None


def test_versions_grow_across_resources_and_writes(make_store):
    store = make_store()
    a, _ = store.put("InferenceService", "default", "a", body("a"))
    b, _ = store.put("InferenceService", "default", "b", body("b"))
    a2, created = store.put(
        "InferenceService", "default", "a", body("a", 2), expected_version=a.resource_version
    )
    assert not created and a2.uid == a.uid
    assert a.resource_version < b.resource_version < a2.resource_version
    assert store.revision() == a2.resource_version
    store.delete("InferenceService", "default", "b")
    assert store.revision() > a2.resource_version


def test_stale_version_and_duplicate_create_conflict(make_store):
    store = make_store()
    first, _ = store.put("InferenceService", "default", "a", body("a"))
    store.put("InferenceService", "default", "a", body("a", 2), expected_version=first.resource_version)
    with pytest.raises(ConflictError, match="has been modified"):
        store.put("InferenceService", "default", "a", body("a", 3), expected_version=first.resource_version)
    with pytest.raises(ConflictError, match="already exists"):
        store.put("InferenceService", "default", "a", body("a"), create_only=True)
    assert store.get("InferenceService", "default", "a").body["spec"]["replicas"] == 2


def test_listeners_see_every_change_in_revision_order(make_store):
    store = make_store()
    seen: list[Change] = []
    store.add_listener(seen.append)
    store.put("InferenceService", "default", "a", body("a"))
    store.put("InferenceService", "default", "a", body("a", 2))
    store.delete("InferenceService", "default", "a")
    store.delete("InferenceService", "default", "a")  # nothing there: no event
    assert [(c.type, c.resource.name) for c in seen] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]
    versions = [c.resource.resource_version for c in seen]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert seen[-1].resource.body["spec"]["replicas"] == 2  # a delete carries the last state


def test_concurrent_writers_never_lose_an_update(make_store):
    """Read-modify-write with expected versions from many threads: every increment lands once."""
    store = make_store()
    store.put("InferenceService", "default", "counter", body("counter", 0))
    versions: list[int] = []
    lock = threading.Lock()

    def increment(times: int) -> None:
        done = 0
        while done < times:
            current = store.get("InferenceService", "default", "counter")
            new = body("counter", current.body["spec"]["replicas"] + 1)
            try:
                stored, _ = store.put(
                    "InferenceService", "default", "counter", new, expected_version=current.resource_version
                )
            except ConflictError:
                continue
            with lock:
                versions.append(stored.resource_version)
            done += 1

    threads = [threading.Thread(target=increment, args=(10,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("InferenceService", "default", "counter").body["spec"]["replicas"] == 40
    assert len(set(versions)) == 40


def test_state_and_revision_survive_a_restart(make_store):
    first = make_store()
    stored, _ = first.put("InferenceService", "default", "a", body("a", 3))
    first.engine.dispose()
    second = make_store()
    assert second.get("InferenceService", "default", "a").body["spec"]["replicas"] == 3
    assert second.revision() == stored.resource_version
    again, _ = second.put("InferenceService", "default", "a", body("a", 4))
    assert again.resource_version > stored.resource_version


def test_reads_see_writes_of_another_process_sharing_the_database(make_store):
    """Reads are served from memory; a write by another store (process) on the same database must show."""
    mine, other = make_store(), make_store()
    mine.put("InferenceService", "default", "a", body("a", 1))
    assert mine.get("InferenceService", "default", "a").body["spec"]["replicas"] == 1  # now cached
    changed, _ = other.put("InferenceService", "default", "a", body("a", 2))
    other.put("InferenceService", "default", "b", body("b", 5))
    seen = mine.get("InferenceService", "default", "a")
    assert seen.body["spec"]["replicas"] == 2 and seen.resource_version == changed.resource_version
    # A write of this process after the other's (a revision gap) leaves nothing stale behind.
    mine.put("InferenceService", "default", "c", body("c", 7))
    other.delete("InferenceService", "default", "b")
    listed, revision = mine.list_at_revision("InferenceService")
    assert [s.name for s in listed] == ["a", "c"]
    assert revision == other.revision()


def test_a_caller_changing_a_returned_body_does_not_change_the_store(make_store):
    store = make_store()
    store.put("InferenceService", "default", "a", body("a", 1))
    store.get("InferenceService", "default", "a").body["spec"]["replicas"] = 99
    store.list("InferenceService")[0].body["spec"]["replicas"] = 98
    assert store.get("InferenceService", "default", "a").body["spec"]["replicas"] == 1
