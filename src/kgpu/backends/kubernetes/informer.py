"""List-then-watch of one kind of object, kept open for as long as the process runs.

What client-go's reflector does, on the official client's ``watch.Watch``: list (the listing's
resourceVersion is where the watch starts), then watch from the last resourceVersion seen, asking
for bookmarks so that version keeps moving while nothing changes. A watch the server closes (its
timeout, a restart, a load balancer) is opened again from that version; a 410 Gone (the version is
older than the server's history) lists again; other errors back off and retry. The consumer gets
the full listing on every (re)list, and every event after it, as plain dicts: model objects are
not built, which keeps a scheduler fed at thousands of pods per second.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

log = logging.getLogger("kgpu.informer")

GONE = 410
WATCH_TIMEOUT_S = 300
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


def raw_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    """A client call whose answer is read as bytes, not turned into model objects (faster, and a
    Binding's answer is a Status the Binding model would refuse); the connection goes back to the pool."""
    response = fn(*args, _preload_content=False, **kwargs)
    try:
        return response.data
    finally:
        response.release_conn()


def list_objects(list_fn: Callable[..., Any], **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
    """Items of a list call as dicts, and the listing's resourceVersion."""
    body = json.loads(raw_call(list_fn, **kwargs))
    return body.get("items") or [], (body.get("metadata") or {}).get("resourceVersion") or ""


class RawWatch(watch.Watch):
    """The official client's watch, with events' objects left as the dicts the server sent.

    (Its ``deserialize=False`` path does not handle ERROR events; no return type does.)"""

    def get_return_type(self, func: Callable[..., Any]) -> None:
        return None


class Informer:
    """Calls ``on_list(items)`` after every listing and ``on_event(type, obj)`` for every change."""

    def __init__(
        self,
        list_fn: Callable[..., Any],
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        stop: threading.Event,
        watch_timeout_s: int = WATCH_TIMEOUT_S,
        backoff_s: tuple[float, ...] = BACKOFF_S,
        **kwargs: Any,
    ) -> None:
        self.list_fn = list_fn
        self.on_list = on_list
        self.on_event = on_event
        self.stop = stop
        self.watch_timeout_s = watch_timeout_s
        self.backoff_s = backoff_s
        self.kwargs = kwargs
        self.resource_version = ""
        self.lists = 0  # how many times it listed (a relist after 410 Gone counts)
        self.watches = 0  # how many watch requests it opened
        self.synced = threading.Event()  # set after the first listing was delivered
        self._watch: RawWatch | None = None

    def run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                if not self.resource_version:
                    items, self.resource_version = list_objects(self.list_fn, **self.kwargs)
                    self.lists += 1
                    self.on_list(items)
                    self.synced.set()
                self._watch_once()
                failures = 0
            except ApiException as exc:
                if self.stop.is_set():
                    break
                if exc.status == GONE:
                    log.info(
                        "watch %s: resourceVersion %s expired, listing again",
                        self.name,
                        self.resource_version,
                    )
                    self.resource_version = ""
                    continue
                failures += 1
                log.warning("watch %s failed: %s %s", self.name, exc.status, exc.reason)
            except (HTTPError, OSError) as exc:
                if self.stop.is_set():
                    break
                failures += 1
                log.warning("watch %s failed: %s", self.name, exc)
            if failures:
                self.stop.wait(self.backoff_s[min(failures, len(self.backoff_s)) - 1])

    @property
    def name(self) -> str:
        return getattr(self.list_fn, "__name__", "list")

    def _watch_once(self) -> None:
        """One watch request from the current resourceVersion, until the server ends it."""
        self._watch = RawWatch()
        self.watches += 1
        stream = self._watch.stream(
            self.list_fn,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_s,
            **self.kwargs,
        )
        for event in stream:
            if self.stop.is_set():
                self._watch.stop()
                break
            kind, obj = event["type"], event["raw_object"]
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = version
            if kind != "BOOKMARK":
                self.on_event(kind, obj)

    def close(self) -> None:
        """Stop the watch now (``stop`` must be set for it to stay stopped)."""
        if self._watch is not None:
            self._watch.stop()


def start(informer: Informer) -> threading.Thread:
    thread = threading.Thread(target=informer.run, name=f"informer-{informer.name}", daemon=True)
    thread.start()
    return thread
