"""`database_url`: tests of the control plane's tables on SQLite and on a real PostgreSQL server.

The PostgreSQL variant needs `KGPU_TEST_POSTGRES_URL` (e.g.
`postgresql+psycopg://kgpu:kgpu@127.0.0.1/kgpu_test`, what `.ci/run` exports) and is skipped
without it; each test gets its own schema there, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

POSTGRES_URL = os.environ.get("KGPU_TEST_POSTGRES_URL")


@pytest.fixture
def sqlite_database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'kgpu-test.db'}"


@pytest.fixture
def postgresql_database_url():
    if not POSTGRES_URL:
        pytest.skip("KGPU_TEST_POSTGRES_URL is not set (a PostgreSQL server URL; .ci/run starts one)")
    schema = f"kgpu_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """One database per test; engines made from the URL share it (a restart, a second server)."""
    return request.getfixturevalue(f"{request.param}_database_url")


@pytest.fixture
def make_engine(database_url):
    """A factory of engines on `database_url`, disposed before the database goes."""
    engines = []

    def make():
        engines.append(create_engine(database_url))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()
