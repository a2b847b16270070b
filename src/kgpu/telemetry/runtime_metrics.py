"""A command runtime's own Prometheus metrics, scraped by kgpu and served on kgpu's `/metrics`.

A command runtime is a server kgpu did not write (infinity, vLLM, llama.cpp's server, ...). Its
metrics know nothing of kgpu: no project, service or replica. And locally it listens on loopback,
so a Prometheus on another machine cannot reach it at all. So kgpu scrapes each ready replica's
metrics path, adds the labels every kgpu series carries (`project`, `service` "<project>/<name>",
`replica`), and appends the result to its own `/metrics`, where Prometheus already scrapes the
gateway: the server's series arrive next to kgpu's, joinable on `service`.

As Prometheus does with `honor_labels: false`, a label the server already sets under one of those
names is kept as `exported_<name>`. Families named like one of kgpu's own, or in kgpu's `kgpu_`
namespace at all, are left out (one name, one family on a page; a server cannot pass series off as
kgpu's). A scrape gets SCRAPE_TIMEOUT_S in all and MAX_SCRAPE_BYTES: a slow or huge answer only
makes its replica's `up` 0. `kgpu_runtime_metrics_up` says, per replica, whether its scrape worked, like
Prometheus' own `up`. Parsing and writing the text format is prometheus_client's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

log = logging.getLogger("kgpu.telemetry")

SCRAPE_TIMEOUT_S = 2.0  # the whole scrape, connecting to the last byte
MAX_SCRAPE_BYTES = 8 * 1024 * 1024
UP_METRIC = "kgpu_runtime_metrics_up"
OWN_NAMESPACE = "kgpu"


@dataclass(frozen=True)
class RuntimeTarget:
    """One command-runtime replica whose server serves Prometheus metrics."""

    service: str  # "<project>/<name>"
    replica: str
    url: str  # its metrics URL

    @property
    def labels(self) -> dict[str, str]:
        return {"project": self.service.partition("/")[0], "service": self.service, "replica": self.replica}


def relabelled(text: str, labels: dict[str, str]) -> list[Metric]:
    """The families of `text` with `labels` on every sample (a clash keeps the server's as exported_*)."""
    families = []
    for family in text_string_to_metric_families(text):
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            own = dict(sample.labels)
            for name in labels:
                if name in own:
                    own[f"exported_{name}"] = own.pop(name)
            copy.samples.append(sample._replace(labels={**own, **labels}))
        families.append(copy)
    return families


def merged(per_replica: Iterable[list[Metric]], taken: set[str]) -> list[Metric]:
    """One family per name across replicas (the first replica's type and help), none named in `taken`."""
    by_name: dict[str, Metric] = {}
    for families in per_replica:
        for family in families:
            if family.name in taken or family.name.partition("_")[0] == OWN_NAMESPACE:
                continue
            first = by_name.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            if first.type == family.type:
                first.samples.extend(family.samples)
    return list(by_name.values())


class _Families:
    """A collector that yields families already gathered (prometheus_client writes them)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def exposition(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


async def _fetch(client: httpx.AsyncClient, url: str) -> str:
    """The answer's text, refused past MAX_SCRAPE_BYTES (a server may answer without end)."""
    async with client.stream("GET", url, timeout=SCRAPE_TIMEOUT_S) as response:
        response.raise_for_status()
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_SCRAPE_BYTES:
                raise ValueError(f"answered more than {MAX_SCRAPE_BYTES} bytes")
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _not_scraped(target: RuntimeTarget, exc: Exception) -> None:
    log.warning("metrics of replica %s (%s) not scraped: %r", target.replica, target.url, exc)


async def _scrape(client: httpx.AsyncClient, target: RuntimeTarget) -> str | None:
    try:
        # httpx's timeout is per read: a server dripping a byte at a time would never time out.
        return await asyncio.wait_for(_fetch(client, target.url), SCRAPE_TIMEOUT_S)
    # unreachable, too slow, an error status, not a URL, or too large
    except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, ValueError) as exc:
        _not_scraped(target, exc)
        return None


def _page(targets: list[RuntimeTarget], texts: list[str | None], taken: set[str]) -> bytes:
    """The scraped texts relabelled, merged and written, with each target's `up`."""
    up = GaugeMetricFamily(UP_METRIC, "Whether the last scrape of a command runtime's own metrics worked.")
    scraped = []
    for target, text in zip(targets, texts, strict=True):
        families = None
        if text is not None:
            try:
                families = relabelled(text, target.labels)
            except ValueError as exc:  # not the text format
                _not_scraped(target, exc)
        if families is not None:
            scraped.append(families)
        up.samples.append(Sample(UP_METRIC, target.labels, 0.0 if families is None else 1.0))
    return exposition([*merged(scraped, taken), up])


async def runtime_metrics(client: httpx.AsyncClient, targets: list[RuntimeTarget], taken: set[str]) -> bytes:
    """The text kgpu's /metrics appends: every target's families, relabelled and merged, and their `up`.

    Parsing and writing the text format is pure Python (tens of milliseconds for one server's page):
    it runs in a thread, not on the event loop the gateway forwards requests on."""
    if not targets:
        return b""
    texts = await asyncio.gather(*(_scrape(client, target) for target in targets))
    return await asyncio.to_thread(_page, targets, texts, taken)
