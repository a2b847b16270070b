"""Operator leader election on a coordination.k8s.io/v1 Lease, against a faked API server.

No real API server can run here: CoordinationV1Api is ``create_autospec`` of the real class over an
in-memory Lease store that answers like the API server (404 Status for a missing Lease, 409 for a
create of an existing one or a replace with a stale resourceVersion). Every Lease sent is validated
against the Kubernetes schemas (kubernetes-validate, 1.30 to 1.34). The election itself is the
official client's ``kubernetes.leaderelection`` as the operator runs it.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import datetime, timezone
from unittest.mock import create_autospec

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kgpu.backends.kubernetes.__main__ import build_parser
from kgpu.backends.kubernetes.leader import ElectionSettings, elector, run_as_leader
from tests.kubernetes.test_manifests_validate import validate_everywhere

NAMESPACE = "kgpu-system"
_SERIALIZER = k8s.ApiClient()


class FakeLeaseServer:
    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], k8s.V1Lease] = {}
        self.version = 0
        self.fail_replace: ApiException | None = None
        self.steal_before_replace: str | None = None  # another holder writes just before our replace
        self.api = create_autospec(k8s.CoordinationV1Api, instance=True)
        self.api.read_namespaced_lease.side_effect = self.read
        self.api.create_namespaced_lease.side_effect = self.create
        self.api.replace_namespaced_lease.side_effect = self.replace
        self.lock = threading.Lock()

    def _validate(self, lease: k8s.V1Lease, namespace: str) -> None:
        body = _SERIALIZER.sanitize_for_serialization(lease)
        body.update(apiVersion="coordination.k8s.io/v1", kind="Lease")
        body["metadata"] = {**body["metadata"], "namespace": namespace}
        validate_everywhere(body)

    def _store(self, name: str, namespace: str, spec: k8s.V1LeaseSpec) -> k8s.V1Lease:
        self.version += 1
        lease = k8s.V1Lease(
            api_version="coordination.k8s.io/v1",
            kind="Lease",
            metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, resource_version=str(self.version)),
            spec=copy.deepcopy(spec),
        )
        self.leases[(namespace, name)] = lease
        return copy.deepcopy(lease)

    def read(self, name, namespace, **kwargs):
        with self.lock:
            lease = self.leases.get((namespace, name))
            if lease is None:
                status = {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
                raise ApiException(status=404, reason="Not Found", body=json.dumps(status))
            return copy.deepcopy(lease)

    def create(self, namespace, body, **kwargs):
        with self.lock:
            self._validate(body, namespace)
            name = body.metadata["name"] if isinstance(body.metadata, dict) else body.metadata.name
            if (namespace, name) in self.leases:
                raise ApiException(status=409, reason="AlreadyExists")
            return self._store(name, namespace, body.spec)

    def replace(self, name, namespace, body, **kwargs):
        with self.lock:
            self._validate(body, namespace)
            if self.fail_replace is not None:
                raise self.fail_replace
            current = self.leases[(namespace, name)]
            if self.steal_before_replace:
                spec = copy.deepcopy(current.spec)
                spec.holder_identity = self.steal_before_replace
                current = self._store(name, namespace, spec)
                self.steal_before_replace = None
            if body.metadata.resource_version != current.metadata.resource_version:
                raise ApiException(status=409, reason="Conflict")
            return self._store(name, namespace, body.spec)

    def holder(self, name: str = "kgpu-operator") -> str | None:
        return self.leases[(NAMESPACE, name)].spec.holder_identity

    def spec(self, name: str = "kgpu-operator") -> k8s.V1LeaseSpec:
        return self.leases[(NAMESPACE, name)].spec


def candidate(server: FakeLeaseServer, identity: str, **timing: int):
    settings = ElectionSettings(namespace=NAMESPACE, identity=identity, **timing)
    return elector(settings, on_started=lambda: None, on_stopped=lambda: None, coordination_api=server.api)


def test_first_candidate_creates_the_lease_and_the_other_follows_against_faked_api_server():
    server = FakeLeaseServer()
    a, b = candidate(server, "op-a"), candidate(server, "op-b")

    assert a.try_acquire_or_renew() is True
    [create] = server.api.create_namespaced_lease.call_args_list
    assert create.args[0] == NAMESPACE
    spec = server.spec()
    assert spec.holder_identity == "op-a" and spec.lease_duration_seconds == 15
    assert spec.acquire_time == spec.renew_time
    assert abs((spec.renew_time - datetime.now(timezone.utc)).total_seconds()) < 5  # a UTC instant

    assert b.try_acquire_or_renew() is False  # held and not expired: b only reads
    assert server.api.replace_namespaced_lease.call_args_list == []
    assert server.holder() == "op-a"


def test_the_leader_renews_keeping_its_acquire_time_against_faked_api_server():
    server = FakeLeaseServer()
    a = candidate(server, "op-a")
    assert a.try_acquire_or_renew() is True
    acquired, version = (
        server.spec().acquire_time,
        server.leases[(NAMESPACE, "kgpu-operator")].metadata.resource_version,
    )
    time.sleep(0.01)

    assert a.try_acquire_or_renew() is True
    [replace] = server.api.replace_namespaced_lease.call_args_list
    assert replace.kwargs["namespace"] == NAMESPACE and replace.kwargs["name"] == "kgpu-operator"
    assert replace.kwargs["body"].metadata.resource_version == version  # optimistic concurrency
    spec = server.spec()
    assert spec.holder_identity == "op-a" and spec.acquire_time == acquired
    assert spec.renew_time > acquired


def test_a_follower_takes_over_only_after_a_whole_lease_duration_without_renewal_against_faked_api_server():
    server = FakeLeaseServer()
    a, b = candidate(server, "op-a"), candidate(server, "op-b")
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    b.observed_time_milliseconds -= 14_000  # 14 s without a renewal seen: not yet
    assert b.try_acquire_or_renew() is False
    b.observed_time_milliseconds -= 2_000  # 16 s > leaseDurationSeconds 15
    assert b.try_acquire_or_renew() is True
    assert server.holder() == "op-b"
    assert server.spec().acquire_time == server.spec().renew_time  # a new term

    assert a.try_acquire_or_renew() is False  # the old leader sees it lost the lease
    assert server.holder() == "op-b"


def test_a_leader_whose_renewal_conflicts_loses_against_faked_api_server():
    server = FakeLeaseServer()
    a = candidate(server, "op-a")
    assert a.try_acquire_or_renew() is True
    server.steal_before_replace = "op-b"  # op-b wrote the Lease between a's read and a's replace
    assert a.try_acquire_or_renew() is False
    assert server.holder() == "op-b"


def test_concurrent_creates_elect_exactly_one_leader_against_faked_api_server():
    server = FakeLeaseServer()
    candidates = [candidate(server, f"op-{i}") for i in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(len(candidates))

    def race(c) -> None:
        barrier.wait()
        results.append(c.try_acquire_or_renew())

    threads = [threading.Thread(target=race, args=(c,)) for c in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]


def test_only_the_leader_does_the_work_and_stops_when_it_loses_the_lease_against_faked_api_server():
    """run_as_leader end to end (real sleeps, the shortest timings the client accepts: ~6 s)."""
    server = FakeLeaseServer()
    timing = {"lease_duration_s": 3, "renew_deadline_s": 2, "retry_period_s": 1}
    # Another replica holds the Lease and then goes away (stops renewing).
    holder = candidate(server, "op-b", **timing)
    assert holder.try_acquire_or_renew() is True
    worked = threading.Event()
    stopped_work = threading.Event()

    def work(stop: threading.Event) -> None:
        worked.set()
        stop.wait(30)
        stopped_work.set()

    settings = ElectionSettings(namespace=NAMESPACE, identity="op-a", **timing)
    runner = threading.Thread(target=run_as_leader, args=(work, settings, server.api), daemon=True)
    started = time.monotonic()
    runner.start()
    assert not worked.wait(1.5)  # a follower while op-b's lease runs
    assert worked.wait(5)  # op-b stopped renewing: op-a took over after the lease duration
    assert time.monotonic() - started >= 3
    assert server.holder() == "op-a"

    server.fail_replace = ApiException(status=500, reason="Internal Server Error")
    runner.join(6)  # renewals fail for the renew deadline: leadership ends, the work is told to stop
    assert not runner.is_alive()
    assert stopped_work.wait(2)


def test_election_settings_refuse_timings_the_client_would_exit_on():
    with pytest.raises(ValueError, match="lease duration"):
        ElectionSettings(namespace="x", lease_duration_s=10, renew_deadline_s=10)
    with pytest.raises(ValueError, match="renew deadline"):
        ElectionSettings(namespace="x", renew_deadline_s=2, retry_period_s=2)


def test_the_operator_takes_the_leader_election_flags():
    args = build_parser().parse_args(
        ["--leader-elect", "--leader-election-namespace", "ops", "--leader-election-id", "kgpu-a"]
    )
    assert (args.leader_elect, args.leader_election_namespace, args.leader_election_id) == (
        True,
        "ops",
        "kgpu-a",
    )
    assert build_parser().parse_args([]).leader_elect is False


def lease_calls(namespace: str = NAMESPACE) -> set[tuple[str, str, str, str | None]]:
    """(apiGroup, resource, verb, namespace) of every call leader election makes: create, renew, follow."""
    server = FakeLeaseServer()
    a, b = candidate(server, "op-a"), candidate(server, "op-b")
    for c in (a, a, b):
        c.try_acquire_or_renew()
    verbs = {"read": "get", "create": "create", "replace": "update"}
    calls: set[tuple[str, str, str, str | None]] = set()
    for name, args, kwargs in server.api.method_calls:
        ns = kwargs.get("namespace") or (args[1] if name.startswith("read") else args[0])
        assert ns == NAMESPACE
        calls.add(("coordination.k8s.io", "leases", verbs[name.split("_", 1)[0]], namespace))
    return calls
