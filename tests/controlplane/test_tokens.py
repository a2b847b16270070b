"""Listing and revoking a project's API tokens (REST and `kgpu token`)."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from kgpu.cli.main import app as cli_app
from kgpu.controlplane.auth import AuthStore, bootstrap_cluster_admin
from kgpu.controlplane.server import create_server_app
from tests.controlplane.test_api import service
from tests.controlplane.test_auth import (
    API,
    bearer,
    live_shared_server,
    make_platform,
    services_path,
    setup_projects,
)


@pytest.fixture
def shared(tmp_path):
    """A server with auth: team-a (admin and viewer tokens) and team-b (admin token)."""
    with TestClient(create_server_app(make_platform(tmp_path), auth=True)) as client:
        client.admin = bootstrap_cluster_admin(client.app.state.access.store, tmp_path)
        client.tokens = setup_projects(client, client.admin)
        client.state_dir = tmp_path
        yield client


def tokens_path(project: str, token: str | None = None) -> str:
    path = f"{API}/projects/{project}/tokens"
    return f"{path}/{token}" if token else path


def token_id(token: str) -> str:
    return token.removeprefix("kgpu_").split("_")[0]


def test_an_admin_lists_its_projects_tokens_without_their_secrets(shared):
    a = bearer(shared.tokens["a"])
    created = shared.post(tokens_path("team-a"), json={"role": "viewer", "name": "ci"}, headers=a)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "ci"
    ci_token = created.json()["token"]
    assert shared.get(services_path("team-a"), headers=bearer(ci_token)).status_code == 200

    listed = shared.get(tokens_path("team-a"), headers=a)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [(t["role"], t["project"]) for t in items] == [
        ("admin", "team-a"),
        ("viewer", "team-a"),
        ("viewer", "team-a"),
    ]
    assert {t["id"] for t in items} == {token_id(shared.tokens[k]) for k in ("a", "a-viewer")} | {
        token_id(ci_token)
    }
    ci = next(t for t in items if t["name"] == "ci")
    assert set(ci) == {"id", "name", "project", "role", "created", "lastUsed"}
    assert ci["lastUsed"] is not None  # it was just used
    assert next(t for t in items if t["id"] == token_id(shared.tokens["a-viewer"]))["lastUsed"] is None
    text = listed.text
    for token in (shared.tokens["a"], shared.tokens["a-viewer"], ci_token):
        assert token.removeprefix("kgpu_").split("_", 1)[1] not in text  # the secret may hold "_" itself
    db = sqlite3.connect(shared.state_dir / "kgpu.db")
    hashes = [h for (h,) in db.execute("SELECT secret_hash FROM api_tokens")]
    db.close()
    assert not any(h in text for h in hashes)

    # Names are unique in a project and validated; the cluster admin lists any project.
    again = shared.post(tokens_path("team-a"), json={"role": "viewer", "name": "ci"}, headers=a)
    assert again.status_code == 409 and 'a token named "ci" already exists' in again.json()["detail"]
    bad = shared.post(tokens_path("team-a"), json={"role": "viewer", "name": "Not_A_Label"}, headers=a)
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["path"] == "name"
    assert len(shared.get(tokens_path("team-b"), headers=bearer(shared.admin)).json()["items"]) == 1


def test_a_revoked_token_is_refused_at_once(shared):
    a, viewer = bearer(shared.tokens["a"]), bearer(shared.tokens["a-viewer"])
    assert shared.get(services_path("team-a"), headers=viewer).status_code == 200  # now in the cache
    revoked = shared.delete(tokens_path("team-a", token_id(shared.tokens["a-viewer"])), headers=a)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"]["role"] == "viewer"
    refused = shared.get(services_path("team-a"), headers=viewer)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert [t["role"] for t in shared.get(tokens_path("team-a"), headers=a).json()["items"]] == ["admin"]
    # By name too; a second revoke finds nothing.
    named = shared.post(tokens_path("team-a"), json={"role": "admin", "name": "deploy"}, headers=a).json()
    assert shared.get(services_path("team-a"), headers=bearer(named["token"])).status_code == 200
    assert shared.delete(tokens_path("team-a", "deploy"), headers=a).status_code == 200
    assert shared.get(services_path("team-a"), headers=bearer(named["token"])).status_code == 401
    gone = shared.delete(tokens_path("team-a", "deploy"), headers=a)
    assert gone.status_code == 404 and gone.json()["detail"] == 'project "team-a" has no token "deploy"'


def test_revocation_reaches_another_server_on_the_same_database(shared):
    # A second server process on the same database: its cache must not keep the token alive.
    other = AuthStore(create_engine(f"sqlite:///{shared.state_dir / 'kgpu.db'}"))
    token = shared.tokens["a"]
    assert other.verify(token) is not None
    shared.delete(tokens_path("team-a", token_id(token)), headers=bearer(shared.admin))
    assert other.verify(token) is None


def test_viewers_and_other_projects_cannot_list_or_revoke_tokens(shared):
    viewer, b = bearer(shared.tokens["a-viewer"]), bearer(shared.tokens["b"])
    target = tokens_path("team-a", token_id(shared.tokens["a"]))
    listed = shared.get(tokens_path("team-a"), headers=viewer)
    assert listed.status_code == 403
    assert listed.json()["detail"] == 'only an admin of project "team-a" can list its tokens'
    assert shared.delete(target, headers=viewer).status_code == 403
    assert shared.get(tokens_path("team-a"), headers=b).status_code == 403
    refused = shared.delete(target, headers=b)
    assert refused.status_code == 403
    assert refused.json()["detail"] == 'only an admin of project "team-a" can revoke its tokens'
    # team-b's admin naming team-a's token under its own project finds nothing.
    assert shared.delete(tokens_path("team-b", token_id(shared.tokens["a"])), headers=b).status_code == 404
    assert shared.delete(target, headers={}).status_code == 401
    # The token still works.
    assert shared.get(services_path("team-a"), headers=bearer(shared.tokens["a"])).status_code == 200
    assert shared.get(tokens_path("nope"), headers=bearer(shared.admin)).status_code == 404


def test_token_columns_are_added_to_an_older_database(make_engine):
    """On SQLite and PostgreSQL (conftest.py): a table of the first release, with a token in it."""
    with make_engine().begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE api_tokens (token_id VARCHAR(32) PRIMARY KEY, project VARCHAR(63), "
                "role VARCHAR(16), salt VARCHAR(64), secret_hash VARCHAR(128), created_at FLOAT)"
            )
        )
        conn.execute(text("INSERT INTO api_tokens VALUES ('older', 'p', 'viewer', 'salt', 'hash', 1.0)"))
    store = AuthStore(make_engine())
    store.create_project("p")
    token = store.create_token("p", "admin", "old")
    assert store.verify(token) is not None
    assert [(t.token_id, t.name, t.last_used_at) for t in store.tokens("p") if t.token_id == "older"] == [
        ("older", "viewer-older", None)  # an unnamed token is called by its role and id
    ]
    assert "old" in [t.name for t in store.tokens("p")]
    AuthStore(make_engine())  # a second start finds every column there and adds none


def test_token_cli_lists_creates_and_revokes(tmp_path, monkeypatch):
    with live_shared_server(tmp_path) as (url, tokens):
        monkeypatch.setenv("KGPU_CONFIG", str(tmp_path / "config.json"))
        monkeypatch.setenv("KGPU_SERVER", url)
        monkeypatch.setenv("KGPU_TOKEN", tokens["a"])
        runner = CliRunner()
        env = {"COLUMNS": "200"}

        created = runner.invoke(cli_app, ["token", "create", "-n", "team-a", "--name", "ci"], env=env)
        assert created.exit_code == 0, created.output
        new_token = next(line for line in created.stdout.splitlines() if line.startswith("kgpu_"))
        listed = runner.invoke(cli_app, ["token", "list", "-n", "team-a"], env=env)
        assert listed.exit_code == 0, listed.output
        rows = [line.split() for line in listed.stdout.splitlines()[1:]]
        assert ["ci", token_id(new_token), "viewer"] in [r[:3] for r in rows]
        assert len(rows) == 3 and new_token.removeprefix("kgpu_").split("_", 1)[1] not in listed.stdout

        with httpx.Client(base_url=url) as http:
            assert http.get(services_path("team-a"), headers=bearer(new_token)).status_code == 200
            revoked = runner.invoke(cli_app, ["token", "revoke", "ci", "-n", "team-a"], env=env)
            assert revoked.exit_code == 0, revoked.output
            assert 'token "ci"' in revoked.output and "revoked" in revoked.output
            assert http.get(services_path("team-a"), headers=bearer(new_token)).status_code == 401
            put = http.put(services_path("team-a", "s"), json=service("s"), headers=bearer(tokens["a"]))
            assert put.status_code == 201

        missing = runner.invoke(cli_app, ["token", "revoke", "ci", "-n", "team-a"], env=env)
        assert missing.exit_code == 1 and 'has no token "ci"' in missing.output
        bad_role = runner.invoke(cli_app, ["token", "create", "-n", "team-a", "--role", "root"], env=env)
        assert bad_role.exit_code == 2 and "--role" in bad_role.output
        monkeypatch.setenv("KGPU_TOKEN", tokens["a-viewer"])
        denied = runner.invoke(cli_app, ["token", "list", "-n", "team-a"], env=env)
        assert denied.exit_code == 1 and "only an admin" in denied.output
