"""The operator's watch loop over HTTP against the API server double: watches that close, history
that expires (410 Gone), bookmarks, and leadership lost while it runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from bench.common.kube_api_double import ApiServerDouble
from kgpu.backends.kubernetes.operator import Operator
from tests.kubernetes.test_operator_api_double import deployment, operator_for, put_service

GV = "kgpu.dev/v1alpha1"


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not there yet
            pass
        time.sleep(0.02)
    raise AssertionError(f"not reached within {timeout_s} s: {check.__doc__ or check}")


@pytest.fixture
def running():
    """An operator running its watch loop against a fresh double; stopped at the end."""
    with ApiServerDouble(bookmark_interval_s=0.05) as api:
        stop = threading.Event()
        operator = operator_for(api, stop)
        thread = threading.Thread(target=operator.run, kwargs={"resync_s": 3600, "watch_timeout_s": 30})
        thread.start()
        eventually(
            lambda: (
                len(getattr(operator, "informers", [])) == 5
                and all(i.synced.is_set() for i in operator.informers)
            )
        )
        yield api, operator, stop, thread
        stop.set()
        api.store.close_watches()
        thread.join(timeout=5)


def services_informer(operator: Operator):
    return operator.informers[0]


def scale_spec(api: ApiServerDouble, replicas: int) -> None:
    api.update(GV, "inferenceservices", "minilm", {"spec": {"replicas": replicas}}, namespace="ml")


def test_a_watch_the_server_closes_is_opened_again_from_where_it_was_over_http_against_api_double(running):
    api, operator, _stop, _thread = running
    put_service(api, {"resources": {"limits": {"nvidia.com/gpu": 1}}})
    eventually(lambda: deployment(api)["spec"]["replicas"] == 1)
    opened = services_informer(operator).watches
    api.store.close_watches()
    scale_spec(api, 3)
    eventually(lambda: deployment(api)["spec"]["replicas"] == 3)
    informer = services_informer(operator)
    assert informer.watches > opened and informer.lists == 1  # resumed, not listed again
    resumed = [
        r for r in api.store.requests if r.query.get("watch") == "true" and "inferenceservices" in r.path
    ]
    assert all(r.query.get("allowWatchBookmarks") == "true" for r in resumed)
    assert resumed[-1].query.get("resourceVersion")


def test_an_expired_resource_version_lists_again_and_misses_nothing_over_http_against_api_double(running):
    api, operator, _stop, _thread = running
    put_service(api, {"resources": {"limits": {"nvidia.com/gpu": 1}}})
    eventually(lambda: deployment(api)["spec"]["replicas"] == 1)
    # The history the watches would resume from is gone and they are closed: 410 when they resume.
    api.store.compact(close_watches=True)
    scale_spec(api, 2)  # a change made while the watches are being re-established
    eventually(lambda: deployment(api)["spec"]["replicas"] == 2)
    eventually(lambda: services_informer(operator).lists >= 2)


def test_bookmarks_move_the_resource_version_without_reconciling_anything_over_http_against_api_double(
    running,
):
    api, operator, _stop, _thread = running
    informer = services_informer(operator)
    before = int(informer.resource_version)
    api.put("v1", "configmaps", {"metadata": {"name": "unrelated", "namespace": "default"}})
    eventually(lambda: int(informer.resource_version) > before)  # only a bookmark can tell it
    writes = [r for r in api.store.requests if r.method != "GET"]
    assert not [w for w in writes if "inferenceservices" in w.path]


def test_leadership_lost_while_running_stops_every_write_over_http_against_api_double(running):
    api, _operator, stop, thread = running
    put_service(api, {"resources": {"limits": {"nvidia.com/gpu": 1}}})
    eventually(lambda: deployment(api)["spec"]["replicas"] == 1)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    writes = len([r for r in api.store.requests if r.method != "GET"])
    scale_spec(api, 4)
    time.sleep(0.3)
    assert len([r for r in api.store.requests if r.method != "GET"]) == writes  # (the test writes directly)
    assert deployment(api)["spec"]["replicas"] == 1
