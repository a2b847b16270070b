"""Token checks an anonymous caller can make: one fast keyed hash each, and limited failures.

Probe: 64 clients sending a known token id with a wrong secret ran PBKDF2 (120,000 rounds) per
request, with no limit. Now a secret is checked with one HMAC-SHA-256, failures are limited per
client address and per token id (429 with Retry-After), and unknown ids cost what known ids do.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from kgpu import auth_failures
from kgpu.auth_failures import FAILURES_PER_ADDRESS, FAILURES_PER_TOKEN_ID, FailureLimiter
from kgpu.controlplane import auth
from kgpu.controlplane.auth import AuthStore, bootstrap_cluster_admin, legacy_hash_secret
from kgpu.controlplane.server import create_server_app
from tests.controlplane.test_auth import API, bearer, make_platform, services_path, setup_projects


@pytest.fixture
def store(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    store = AuthStore(engine)
    store.create_project("p")
    yield store
    engine.dispose()


def _wrong(token: str) -> str:
    return token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")


def test_a_secret_is_stored_as_one_hmac_sha256_keyed_per_token(store, tmp_path):
    token = store.create_token("p", "admin")
    token_id, secret = token.removeprefix("kgpu_").split("_", 1)
    with store._engine.connect() as conn:
        salt, stored, scheme = conn.execute(
            text("SELECT salt, secret_hash, hash_scheme FROM api_tokens WHERE token_id = :i"), {"i": token_id}
        ).one()
    assert scheme == "hmac-sha256"
    assert stored == hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()
    assert secret not in (salt, stored)
    assert store.verify(token).token_id == token_id
    assert store.verify(_wrong(token)) is None


def test_no_wrong_token_runs_the_slow_hash(store, monkeypatch):
    token = store.create_token("p", "admin")
    slow_calls = []
    real = hashlib.pbkdf2_hmac
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", lambda *a, **k: slow_calls.append(a) or real(*a, **k))
    for _ in range(5):
        assert store.verify(_wrong(token)) is None
    assert store.verify(token) is not None
    assert slow_calls == []


def test_unknown_and_known_ids_do_the_same_work(store, monkeypatch):
    """Timing is not measured (no timed tests): the same hash runs once either way."""
    token = store.create_token("p", "viewer")
    hashed = []
    real = auth.hash_secret
    monkeypatch.setattr(auth, "hash_secret", lambda secret, key: hashed.append(len(key)) or real(secret, key))
    assert store.verify(_wrong(token)) is None
    known = list(hashed)
    hashed.clear()
    assert store.verify("kgpu_0123456789abcdef_" + "x" * 43) is None
    assert hashed == known == [16]


def test_a_token_stored_with_pbkdf2_still_works_and_is_rewritten_with_hmac(store, monkeypatch):
    """A database of an earlier release: its tokens keep working, checked with PBKDF2 only once."""
    token = store.create_token("p", "admin", "legacy")
    token_id, secret = token.removeprefix("kgpu_").split("_", 1)
    with store._engine.begin() as conn:
        salt = conn.execute(text("SELECT salt FROM api_tokens WHERE token_id = :i"), {"i": token_id}).scalar()
        conn.execute(
            text("UPDATE api_tokens SET secret_hash = :h, hash_scheme = NULL WHERE token_id = :i"),
            {"h": legacy_hash_secret(secret, bytes.fromhex(salt)), "i": token_id},
        )
    assert store.verify(_wrong(token)) is None
    assert store.verify(token).token_id == token_id
    slow_calls = []
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", lambda *a, **k: slow_calls.append(a))
    assert store.verify(token).token_id == token_id
    assert store.verify(_wrong(token)) is None
    assert slow_calls == []
    with store._engine.connect() as conn:
        assert conn.execute(text("SELECT hash_scheme FROM api_tokens")).scalar() == "hmac-sha256"


@pytest.fixture
def shared(tmp_path):
    platform = make_platform(tmp_path)
    app = create_server_app(platform, auth=True)
    with TestClient(app, client=("198.51.100.7", 4000)) as client:
        admin = bootstrap_cluster_admin(app.state.access.store, tmp_path)
        client.admin = admin
        client.tokens = setup_projects(client, admin)
        yield client


def _from(shared: TestClient, address: str) -> TestClient:
    """Requests to the running app from another client address (its lifespan already started)."""
    return TestClient(shared.app, client=(address, 4000))


def test_failed_checks_from_one_address_get_429_with_retry_after(shared):
    wrong = bearer(_wrong(shared.tokens["a"]))
    codes = [
        shared.get(services_path("team-a"), headers=wrong).status_code for _ in range(FAILURES_PER_ADDRESS)
    ]
    assert codes == [401] * (FAILURES_PER_ADDRESS - 1) + [429]
    refused = shared.get(services_path("team-a"), headers=bearer(shared.tokens["a"]))
    assert refused.status_code == 429  # the address is refused before its token is looked at
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # The gateway shares the budget: inference from that address is refused the same way.
    infer = shared.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers=wrong)
    assert infer.status_code == 429 and infer.headers["retry-after"]
    # Another address is not affected.
    other = _from(shared, "203.0.113.9")
    assert other.get(services_path("team-a"), headers=bearer(shared.tokens["a"])).status_code == 200


def test_failures_on_one_token_id_from_many_addresses_get_429_but_the_right_secret_passes(shared):
    token = shared.tokens["a"]
    wrong = bearer(_wrong(token))
    codes = []
    for i in range(FAILURES_PER_TOKEN_ID + 1):
        caller = _from(shared, f"10.0.{i // 250}.{i % 250}")
        codes.append(caller.get(services_path("team-a"), headers=wrong).status_code)
    assert codes[: FAILURES_PER_TOKEN_ID - 1] == [401] * (FAILURES_PER_TOKEN_ID - 1)
    assert codes[FAILURES_PER_TOKEN_ID - 1 :] == [429, 429]
    assert _from(shared, "10.9.9.9").get(services_path("team-a"), headers=bearer(token)).status_code == 200


def test_the_limit_ends_with_its_window():
    now = [0.0]
    limiter = FailureLimiter(per_address=2, per_token_id=100, window_s=10.0, clock=lambda: now[0])
    limiter.failed("a", "id1")
    with pytest.raises(auth.TooManyFailures) as exc:
        limiter.failed("a", "id2")
    assert exc.value.retry_after_header == "10"
    now[0] = 9.5
    with pytest.raises(auth.TooManyFailures):
        limiter.check_address("a")
    now[0] = 10.0
    limiter.check_address("a")  # a new window


def test_projects_routes_count_failures_too(shared):
    wrong = bearer(_wrong(shared.admin))
    codes = {
        shared.get(f"{API}/projects", headers=wrong).status_code for _ in range(FAILURES_PER_ADDRESS + 2)
    }
    assert codes == {401, 429}


def test_a_failed_check_is_answered_only_after_the_failure_delay(shared, monkeypatch):
    """What keeps a flood cheap: a client that waits for its answer sends one wrong token per delay."""
    monkeypatch.setattr(auth_failures, "FAILURE_DELAY_S", 0.3)
    for path, method in ((services_path("team-a"), "GET"), ("/v1/embeddings", "POST")):
        started = time.monotonic()
        response = shared.request(
            method, path, headers=bearer(_wrong(shared.tokens["a"])), json={"model": "m"}
        )
        assert response.status_code == 401
        assert time.monotonic() - started >= 0.3
    assert shared.get(services_path("team-a"), headers=bearer(shared.tokens["a"])).status_code == 200
