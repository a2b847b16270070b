"""Projects and API tokens in the database, on SQLite and on PostgreSQL (conftest.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from kgpu.controlplane.auth import AuthError, AuthStore


def test_projects_quotas_and_tokens(make_engine):
    store = AuthStore(make_engine())
    store.create_project("team-a", gpu_quota=4)
    store.create_project("team-b")
    with pytest.raises(AuthError, match='project "team-a" already exists'):
        store.create_project("team-a")
    assert store.set_quota("team-b", 2**31 - 1).gpu_quota == 2**31 - 1  # the largest quota the API takes
    assert [(p.name, p.gpu_quota) for p in store.projects()] == [("team-a", 4), ("team-b", 2**31 - 1)]

    admin = store.create_token("team-a", "admin", "ci")
    viewer = store.create_token("team-a", "viewer")
    with pytest.raises(AuthError, match='a token named "ci" already exists'):
        store.create_token("team-a", "admin", "ci")
    principal = store.verify(admin)
    assert (principal.project, principal.role) == ("team-a", "admin")
    assert store.verify(admin[:-1] + ("x" if admin[-1] != "x" else "y")) is None  # wrong secret
    infos = store.tokens("team-a")
    assert (infos[0].name, infos[1].role) == ("ci", "viewer") and infos[0].last_used_at is not None
    with make_engine().connect() as conn:  # stored hashed: the secret is nowhere in the table
        rows = conn.execute(text("SELECT * FROM api_tokens")).all()
    assert all(admin.removeprefix("kgpu_").split("_", 1)[1] not in str(row) for row in rows)

    # Another server on the same database refuses a token revoked here at once.
    other = AuthStore(make_engine())
    assert other.verify(viewer) is not None
    assert store.revoke("team-a", "ci") is not None
    assert other.verify(admin) is None and store.verify(admin) is None
    assert store.revoke("team-b", viewer.removeprefix("kgpu_").split("_")[0]) is None  # another project's
    assert other.verify(viewer) is not None
