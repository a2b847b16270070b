"""Placement policies as score plugins (plus the GPU selector each one uses inside a node).

The baselines follow the FGD paper's artifact (hkust-adsl/kubernetes-scheduler-simulator):
integer scores in 0..100 like kube-scheduler's, ties broken at random by the framework.

- ``random``: every feasible node scores the same; a random GPU that fits.
- ``dot-product`` (Tetris): 1 - <free, request> over (CPU, total GPU), normalized by 128 CPUs / 8 GPUs.
- ``gpu-packing``: shared GPUs first, then free GPUs on used nodes, then idle nodes.
- ``gpu-clustering``: nodes already running pods of the same GPU kind first.
- ``best-fit``: least CPU and GPU left after placement (weights 0.5 / 0.5).
- ``fgd``: least increase of fragmentation against the typical pods (node and GPU), scored as the
  artifact does: ``int(100 * sigmoid((frag_before - frag_after) / 1000))``.
- ``kgpu``: FGD's fragmentation plus GPUs stranded by CPU/memory, banded, packing inside a band;
  shares pick their GPU by the sum of squares of the free-share histogram; capacity kept for pods
  only a few nodes can host. See :class:`KgpuScore`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kgpu.scheduling.context import RequestContext
from kgpu.scheduling.frag import FragmentationCache, TypicalPods
from kgpu.scheduling.framework import BestFitGpuSelector, Framework
from kgpu.scheduling.pools import PoolReserve
from kgpu.scheduling.requests import MILLI, PodRequest
from kgpu.scheduling.snapshot import ClusterSnapshot, Placement

MAX_SCORE = 100
MAX_SPEC_CPU = 128_000  # the artifact's normalizers: the largest node's CPU and GPU
MAX_SPEC_GPU = 8_000


class RandomScore:
    name = "Random"

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def score(self, ctx: RequestContext, nodes: np.ndarray) -> np.ndarray:
        return self.rng.random(len(nodes))


class RandomGpuSelector(BestFitGpuSelector):
    """A uniformly random GPU among those that fit (shares); otherwise as best-fit."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def select(self, ctx: RequestContext, node: int) -> tuple[int, ...]:
        if ctx.kind in ("share", "memory-share"):
            fits = np.flatnonzero(ctx.snapshot.gpu_left[node] >= ctx.need_milli[node])
            return (int(fits[self.rng.integers(len(fits))]),)
        return super().select(ctx, node)


class DotProductScore:
    name = "DotProduct"

    def score(self, ctx: RequestContext, nodes: np.ndarray) -> np.ndarray:
        s = ctx.snapshot
        gpu_req = ctx.need_milli[nodes] * ctx.gpu_count
        dot = (s.cpu_left[nodes] / MAX_SPEC_CPU) * (ctx.request.cpu_milli / MAX_SPEC_CPU) + (
            s.gpu_left[nodes].sum(axis=1) / MAX_SPEC_GPU
        ) * (gpu_req / MAX_SPEC_GPU)
        return np.floor(MAX_SCORE * (1 - dot / 2))


class GpuPackingScore:
    name = "GpuPacking"

    def score(self, ctx: RequestContext, nodes: np.ndarray) -> np.ndarray:
        if ctx.gpu_count == 0:
            return np.zeros(len(nodes))
        s = ctx.snapshot
        left = s.gpu_left[nodes]
        count = s.gpu_count[nodes]
        free = (left == MILLI).sum(axis=1)
        need = ctx.need_milli[nodes]
        scores = np.empty(len(nodes))
        idle_node = free == count
        # case 3: an idle node, fewer GPUs better
        scores[idle_node] = np.maximum(MAX_SCORE // 3 - free[idle_node], free[idle_node])
        for i in np.flatnonzero(~idle_node):
            row = left[i]
            order = np.argsort(row, kind="stable")
            use = [g for g in order if row[g] >= need[i]][: ctx.gpu_count]
            full = sum(1 for g in use if row[g] == MILLI)
            if full:  # case 2: must use free GPUs of a used node
                scores[i] = max(MAX_SCORE // 2 - full, MAX_SCORE // 3)
            else:  # case 1: shared GPUs, fuller better
                ratio = sum(int(row[g]) * 100 // MILLI for g in use)
                scores[i] = max(MAX_SCORE - ratio // 10, MAX_SCORE // 2)
        return scores


def affinity_tag(request: PodRequest) -> str | None:
    """The GPU 'kind' gpu-clustering groups by: shared GPUs, or the number of whole GPUs."""
    kind = request.kind
    if kind == "none":
        return None
    if kind in ("share", "memory-share"):
        return "share"
    if kind == "whole":
        return f"{request.gpu_count}-gpu"
    return kind


class GpuClusteringScore:
    name = "GpuClustering"

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.tags: list[Counter[str]] = [Counter() for _ in range(snapshot.num_nodes)]

    def reserved(self, request: PodRequest, placement: Placement, sign: int) -> None:
        tag = affinity_tag(request)
        if tag is not None:
            self.tags[placement.node][tag] += sign
            if self.tags[placement.node][tag] <= 0:
                del self.tags[placement.node][tag]

    def score(self, ctx: RequestContext, nodes: np.ndarray) -> np.ndarray:
        tag = affinity_tag(ctx.request)
        if tag is None:
            return np.zeros(len(nodes))
        used = (MAX_SCORE // 4) * (MAX_SPEC_GPU - ctx.snapshot.gpu_left[nodes].sum(axis=1)) // MAX_SPEC_GPU
        scores = np.empty(len(nodes))
        for i, node in enumerate(nodes):
            tags = self.tags[node]
            # bands: only this kind here 3, this kind among others 2, idle node 1, other kinds 0
            same = tags.get(tag, 0) > 0
            band = (3 if len(tags) == 1 else 2) if same else (0 if tags else 1)
            scores[i] = used[i] + band * MAX_SCORE // 4
        return scores


class BestFitScore:
    name = "BestFit"

    def score(self, ctx: RequestContext, nodes: np.ndarray) -> np.ndarray:
        s = ctx.snapshot
        cpu_after = s.cpu_left[nodes] - ctx.request.cpu_milli
        gpu_after = s.gpu_left[nodes].sum(axis=1) - ctx.need_milli[nodes] * ctx.gpu_count
        waste = 0.5 * cpu_after / MAX_SPEC_CPU + 0.5 * gpu_after / MAX_SPEC_GPU
        return np.floor((1.0 - waste) * MAX_SCORE)


@dataclass
class _ShapeEntry:
    seen: np.ndarray  # node version the entry was computed at
    value: np.ndarray  # score of the node for this shape
    gpu: np.ndarray  # chosen GPU (shares), -1 otherwise


def _sigmoid_score(delta: np.ndarray) -> np.ndarray:
    """The artifact's score of a fragmentation decrease ``delta`` (milli-GPU): int(100 * sigmoid(delta/1000))."""
    return np.floor(MAX_SCORE / (1.0 + np.exp(-delta / 1000.0)))


class FragmentationScore:
    """Scores nodes by the change of their fragmentation if the request went there (best GPU inside).

    Values are cached per request shape and node version: a placement changes one node, so a
    cycle recomputes only nodes that changed since this shape was last scored.
    """

    name = "FGD"

    def __init__(
        self,
        typical: TypicalPods,
        snapshot: ClusterSnapshot,
        transform: Callable[[np.ndarray, np.ndarray, np.ndarray, RequestContext], np.ndarray] | None = None,
    ) -> None:
        self.typical = typical
        self.snapshot = snapshot
        self.frag = FragmentationCache(typical, snapshot)
        self.transform = transform or (lambda delta, _nodes, _after, _ctx: _sigmoid_score(delta))
        self._shapes: dict[tuple, _ShapeEntry] = {}

    def _entry(self, ctx: RequestContext) -> _ShapeEntry:
        entry = self._shapes.get(ctx.shape)
        if entry is None:
            n = self.snapshot.num_nodes
            entry = _ShapeEntry(np.full(n, -1, dtype=np.int64), np.zeros(n), np.full(n, -1, dtype=np.int64))
            self._shapes[ctx.shape] = entry
        return entry

    def score(self, ctx: RequestContext, nodes: np.ndarray) -> np.ndarray:
        return self._cached_scores(ctx, nodes)

    def _cached_scores(self, ctx: RequestContext, nodes: np.ndarray) -> np.ndarray:
        """Per-node scores for this request shape, recomputed only for nodes changed since last asked."""
        return self._refresh(ctx, nodes).value[nodes]

    def _refresh(self, ctx: RequestContext, nodes: np.ndarray) -> _ShapeEntry:
        """This shape's entry, brought up to date on ``nodes`` (those whose version moved)."""
        entry = self._entry(ctx)
        s = self.snapshot
        stale = nodes[entry.seen[nodes] != s.version[nodes]]
        if len(stale):
            self._compute(ctx, stale, entry)
            entry.seen[stale] = s.version[stale]
        return entry

    def _fragmentation_before(self, nodes: np.ndarray) -> np.ndarray:
        """Fragmentation of ``nodes`` as they are now."""
        return self.frag.get(nodes)

    def _fragmentation_after(
        self, nodes: np.ndarray, cpu_left: np.ndarray, memory_left: np.ndarray, gpu_left: np.ndarray
    ) -> np.ndarray:
        """Fragmentation of ``nodes`` in a hypothetical state (memory does not enter FGD's measure)."""
        return self.typical.fragmentation(cpu_left, gpu_left, self.snapshot.model_idx[nodes])

    def _share_table(self, ctx: RequestContext, stale: np.ndarray) -> np.ndarray:
        """Score of the share on each GPU of ``stale`` nodes (-inf where it does not fit)."""
        s = self.snapshot
        before = self._fragmentation_before(stale)
        left = s.gpu_left[stale]
        need = ctx.need_milli[stale]
        g = left.shape[1]
        valid = left >= need[:, None]
        # GPUs with equal free share give the same result: score only the first of each value.
        same = left[:, :, None] == left[:, None, :]
        earlier = np.tril(np.ones((g, g), dtype=bool), k=-1)
        valid &= ~(same & earlier[None, :, :]).any(axis=2)
        rows, cols = np.nonzero(valid)
        after_left = left[rows].copy()
        after_left[np.arange(len(rows)), cols] -= need[rows]
        nodes = stale[rows]
        after = self._fragmentation_after(
            nodes,
            s.cpu_left[nodes] - ctx.request.cpu_milli,
            s.memory_left[nodes] - ctx.request.memory_mib,
            after_left,
        )
        table = np.full(left.shape, -np.inf)
        table[rows, cols] = self.transform(before[rows] - after, nodes, after_left, ctx)
        return table

    def _compute(self, ctx: RequestContext, stale: np.ndarray, entry: _ShapeEntry) -> None:
        s = self.snapshot
        left = s.gpu_left[stale]
        kind = ctx.kind
        if kind in ("share", "memory-share"):
            table = self._share_table(ctx, stale)
            best = np.argmax(table, axis=1)
            entry.value[stale] = table[np.arange(len(stale)), best]
            entry.gpu[stale] = best
            return
        if kind == "whole":
            free = left == MILLI
            take = free & (np.cumsum(free, axis=1) <= ctx.gpu_count)
            after_left = np.where(take, 0, left)
        elif kind == "none":
            after_left = left
        else:  # time slices and MIG devices are outside the milli-share model: neutral
            entry.value[stale] = 0.0
            return
        before = self._fragmentation_before(stale)
        after = self._fragmentation_after(
            stale,
            s.cpu_left[stale] - ctx.request.cpu_milli,
            s.memory_left[stale] - ctx.request.memory_mib,
            after_left,
        )
        entry.value[stale] = self.transform(before - after, stale, after_left, ctx)
        entry.gpu[stale] = -1


class FragmentationGpuSelector(BestFitGpuSelector):
    """Shares go to the GPU the fragmentation score chose; everything else as best-fit."""

    def __init__(self, plugin: FragmentationScore) -> None:
        self.plugin = plugin

    def select(self, ctx: RequestContext, node: int) -> tuple[int, ...]:
        if ctx.kind in ("share", "memory-share"):
            entry = self.plugin._entry(ctx)
            if entry.seen[node] != ctx.snapshot.version[node]:
                self.plugin.score(ctx, np.array([node]))
            return (int(entry.gpu[node]),)
        return super().select(ctx, node)


class KgpuScore(FragmentationScore):
    """kgpu's default: fragmentation descent that also counts GPUs stranded by CPU and memory, in
    coarse bands with packing inside a band; shares choose their GPU by the sum of squares of the
    cluster's free-share histogram.

    1. **What fragmentation counts.** FGD's measure (idle GPU that the typical pods cannot use), with
       the typical pods weighted by the GPU they request rather than by count (what fragmentation
       costs is GPUs, and multi-GPU pods then weigh what they ask for), plus the idle GPU a node
       can no longer feed: ``max(0, idle - cpu_left / c)`` with ``c`` the workload's CPU per
       milli-GPU (all requested CPU over all requested GPU, CPU-only pods included), and the same
       for memory. FGD looks at one typical pod at a time, so a node whose CPU is shared out by
       CPU-heavy pods looks healthy until its last GPUs cannot be given to anyone; this term makes
       CPU-heavy pods prefer CPU-rich nodes and GPU-heavy, CPU-light pods the CPU-poor ones.
    2. **How a node scores.** The decrease of that fragmentation, in bands twice as wide as FGD's
       sigmoid (``band_milli``), then least idle GPU left on the node, then node order: partly
       used nodes fill up before idle ones are opened (FGD's published result depends on the same
       consistent order, see the framework).
    3. **Which GPU a share takes.** Sum of squares (Csirik et al., bin packing with discrete item
       sizes): ``N[g]`` counts the partly used GPUs with ``g`` milli free; gaps under
       ``closed_gap_milli`` count as closed. A share moving a GPU from gap ``g`` to ``g - need``
       changes ``sum N[g]**2``; the score is the band minus that change, which in practice decides
       the GPU and leaves the band to rank nodes among equal GPU choices. Plentiful gap sizes are
       filled first and a rare size is kept for the pods that fit it, so free shares do not pile
       up in a size that few pods can use (FGD's measure, an expectation over one typical pod,
       cannot tell how many gaps of a size already wait for the same pods).
    4. **Whole nodes stay whole.** A share does not open an idle node big enough for the largest
       typical multi-GPU pod (``protect_gpus``) while any other node can take it.
    5. **Small pools are kept for the pods that need them.** Pods pinned to a small GPU model, or
       too big for all but a few nodes, fail early when flexible pods fill those nodes first; FGD's
       per-node measure does not see it. While such a group's remaining capacity is below its share
       of the workload's GPU times the cluster's free GPU, no pod takes that capacity where another
       node fits it (:class:`~kgpu.scheduling.pools.PoolReserve`; above the idle-node rule).
    6. **A cluster short of CPU.** When the nodes have less CPU per GPU than the whole workload asks
       for, not every pod can be fed; the CPU term then uses the GPU pods' own CPU per GPU, so the
       GPUs are kept fed and the CPU-only pods get what is left.
    """

    name = "kgpu"

    def __init__(
        self,
        typical: TypicalPods,
        snapshot: ClusterSnapshot,
        cpu_per_milli: float = 0.0,
        memory_per_milli: float = 0.0,
        band_milli: float = 2000.0,
        closed_gap_milli: int = 100,
        protect_gpus: int | None = None,
        pools: PoolReserve | None = None,
    ) -> None:
        self.band_milli = band_milli
        self.cpu_per_milli = cpu_per_milli
        self.memory_per_milli = memory_per_milli
        self.closed_gap_milli = max(1, closed_gap_milli)
        self.protect_gpus = protect_gpus
        # Larger than any change of the sum of squares (at most 2 x GPUs + 2) plus a band's spread.
        self._protect_penalty = 4.0 * float(snapshot.gpu_present.sum()) + 4.0 * MAX_SCORE + 1.0
        self._tables: dict[tuple, np.ndarray] = {}
        self.pools = pools
        self._gaps = np.zeros(MILLI + 1)
        self._gaps_left = np.zeros_like(snapshot.gpu_left)
        self._gaps_seen = np.full(snapshot.num_nodes, -1, dtype=np.int64)
        # Per milli-GPU a short group loses: above the idle-node rule and everything under it.
        self._pool_penalty = 2.0 * self._protect_penalty
        super().__init__(typical, snapshot, transform=self._banded)

    @classmethod
    def for_workload(
        cls, workload: Sequence[PodRequest], snapshot: ClusterSnapshot, **kwargs: object
    ) -> KgpuScore:
        """Typical pods weighted by GPU, CPU and memory per milli-GPU, all from ``workload``."""
        try:
            typical = TypicalPods.from_requests(workload, snapshot, weight_by_gpu=True)
        except ValueError:  # no GPU request at all: count pods instead
            typical = TypicalPods.from_requests(workload, snapshot)
        counted = [r for r in workload if r.kind in ("none", "whole", "share")]
        gpu = sum(r.total_gpu_milli for r in counted)
        cpu = sum(r.cpu_milli for r in counted) / gpu if gpu else 0.0
        # A cluster with less CPU per GPU than the whole workload asks for cannot feed every pod;
        # the GPUs are then kept fed at the GPU pods' own ratio (CPU-only pods get what is left).
        has_gpu = snapshot.gpu_count > 0
        if gpu and snapshot.cpu_capacity[has_gpu].sum() < cpu * snapshot.gpu_capacity_milli.sum():
            cpu = sum(r.cpu_milli for r in counted if r.gpu_count) / gpu
        memory = sum(r.memory_mib for r in counted) / gpu if gpu else 0.0
        multi = typical.gpu_count[typical.gpu_milli == MILLI]
        largest = int(multi.max()) if len(multi) else 0
        return cls(
            typical,
            snapshot,
            cpu_per_milli=cpu,
            memory_per_milli=memory,
            protect_gpus=largest if largest > 1 else None,
            pools=PoolReserve.from_workload(workload, snapshot),
            **kwargs,  # type: ignore[arg-type]
        )

    def stranded(self, cpu_left: np.ndarray, memory_left: np.ndarray, gpu_left: np.ndarray) -> np.ndarray:
        """Idle milli-GPU the node's CPU (and memory) cannot feed at the workload's ratio."""
        idle = gpu_left.sum(axis=1).astype(np.float64)
        out = np.zeros_like(idle)
        if self.cpu_per_milli > 0:
            out += np.maximum(0.0, idle - np.maximum(cpu_left, 0) / self.cpu_per_milli)
        if self.memory_per_milli > 0:
            out += np.maximum(0.0, idle - np.maximum(memory_left, 0) / self.memory_per_milli)
        return out

    def _fragmentation_before(self, nodes: np.ndarray) -> np.ndarray:
        s = self.snapshot
        return self.frag.get(nodes) + self.stranded(
            s.cpu_left[nodes], s.memory_left[nodes], s.gpu_left[nodes]
        )

    def _fragmentation_after(
        self, nodes: np.ndarray, cpu_left: np.ndarray, memory_left: np.ndarray, gpu_left: np.ndarray
    ) -> np.ndarray:
        return super()._fragmentation_after(nodes, cpu_left, memory_left, gpu_left) + self.stranded(
            cpu_left, memory_left, gpu_left
        )

    def _banded(
        self, delta: np.ndarray, nodes: np.ndarray, after_left: np.ndarray, ctx: RequestContext
    ) -> np.ndarray:
        band = np.floor(MAX_SCORE / (1.0 + np.exp(-delta / self.band_milli)))
        # Idle GPU after placement is at most 8000 milli per node: 1e-6 per milli stays inside one band.
        return band - 1e-6 * after_left.sum(axis=1)

    def _compute(self, ctx: RequestContext, stale: np.ndarray, entry: _ShapeEntry) -> None:
        if ctx.kind not in ("share", "memory-share"):
            super()._compute(ctx, stale, entry)
            return
        table = self._tables.get(ctx.shape)
        if table is None:
            table = self._tables[ctx.shape] = np.full(self.snapshot.gpu_left.shape, -np.inf)
        table[stale] = self._share_table(ctx, stale)

    def _gap_histogram(self, left: np.ndarray, capacity: np.ndarray) -> np.ndarray:
        counted = (left >= self.closed_gap_milli) & (left < capacity)
        return np.bincount(left[counted], minlength=MILLI + 1).astype(np.float64)

    def gap_counts(self) -> np.ndarray:
        """``N[g]``: partly used GPUs with ``g`` milli free (gaps under ``closed_gap_milli`` excluded).

        Kept up to date from the nodes whose version moved since the last call (a placement
        changes one node; counting every GPU of a large cluster each cycle was most of its cost).
        """
        s = self.snapshot
        stale = np.flatnonzero(self._gaps_seen != s.version)
        if len(stale):
            capacity = s.gpu_capacity_milli[stale]
            self._gaps -= self._gap_histogram(self._gaps_left[stale], capacity)
            self._gaps_left[stale] = s.gpu_left[stale]
            self._gaps += self._gap_histogram(self._gaps_left[stale], capacity)
            self._gaps_seen[stale] = s.version[stale]
        return self._gaps

    def _square_change(self, left: np.ndarray, need: np.ndarray, share_milli: int | None) -> np.ndarray:
        """Change of ``sum N[g]**2`` if the share took each GPU of ``left`` (rows: nodes, need per row)."""
        counts = self.gap_counts()
        closed = self.closed_gap_milli
        if share_milli is not None:
            # One need for every node: the change depends on the GPU's free share alone, so it is a
            # table over 0..MILLI looked up once per GPU instead of a dozen passes over (nodes, GPUs).
            # A GPU's free share never exceeds its capacity, so "counted" is closed <= free < MILLI.
            free = np.arange(MILLI + 1)
            gap_after = free - share_milli
            change = np.where((free >= closed) & (free < MILLI), 1.0 - 2.0 * counts, 0.0)
            change += np.where(gap_after >= closed, 2.0 * counts[np.clip(gap_after, 0, MILLI)] + 1.0, 0.0)
            return change[left]
        gap_after = left - need[:, None]
        was_counted = (left >= closed) & (left < MILLI)
        change = np.where(was_counted, 1.0 - 2.0 * counts[np.clip(left, 0, MILLI)], 0.0)
        change += np.where(gap_after >= closed, 2.0 * counts[np.clip(gap_after, 0, MILLI)] + 1.0, 0.0)
        return change

    def score(self, ctx: RequestContext, nodes: np.ndarray) -> np.ndarray:
        value = self._score(ctx, nodes)
        short = self.pools.short() if self.pools is not None else []
        if not short or ctx.kind not in ("none", "whole", "share"):
            return value
        left = self.snapshot.gpu_left[nodes]
        if ctx.kind == "whole":
            free = left == MILLI
            after = np.where(free & (np.cumsum(free, axis=1) <= ctx.gpu_count), 0, left)
        elif ctx.kind == "share":
            after = left.copy()
            after[np.arange(len(nodes)), self._entry(ctx).gpu[nodes]] -= ctx.request.gpu_milli
        else:
            after = left
        lost = self.pools.lost(ctx, nodes, after, short)
        return value - self._pool_penalty * lost if lost.any() else value

    def _score(self, ctx: RequestContext, nodes: np.ndarray) -> np.ndarray:
        if ctx.kind not in ("share", "memory-share"):
            return super().score(ctx, nodes)
        entry = self._refresh(ctx, nodes)  # brings this shape's per-GPU tables up to date
        s = self.snapshot
        left = s.gpu_left[nodes]
        share = ctx.request.gpu_milli if ctx.kind == "share" else None
        combined = self._tables[ctx.shape][nodes] - self._square_change(left, ctx.need_milli[nodes], share)
        if self.protect_gpus is not None:
            _, _, idle = s.gpu_summary()
            idle_node = (idle[nodes] == s.capacity_per_node_milli[nodes]) & (
                s.gpu_count[nodes] >= self.protect_gpus
            )
            combined[idle_node] -= self._protect_penalty
        best = np.argmax(combined, axis=1)
        entry.gpu[nodes] = best  # what the GPU selector reads for the node picked this cycle
        return combined[np.arange(len(nodes)), best]


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    description: str


POLICIES: dict[str, PolicyInfo] = {
    "random": PolicyInfo("random", "a random feasible node"),
    "dot-product": PolicyInfo("dot-product", "Tetris dot product of free and requested CPU/GPU"),
    "gpu-packing": PolicyInfo("gpu-packing", "shared GPUs, then used nodes, then idle nodes"),
    "gpu-clustering": PolicyInfo("gpu-clustering", "nodes running pods of the same GPU kind"),
    "best-fit": PolicyInfo("best-fit", "least CPU and GPU left after placement"),
    "fgd": PolicyInfo("fgd", "fragmentation gradient descent (ATC'23), scored as its artifact"),
    "kgpu": PolicyInfo(
        "kgpu",
        "kgpu's default: fragmentation incl. CPU/memory-stranded GPUs, banded; sum-of-squares GPU choice",
    ),
}


def make_framework(
    policy: str,
    snapshot: ClusterSnapshot,
    workload: Sequence[PodRequest] = (),
    rng: np.random.Generator | None = None,
) -> Framework:
    """A framework running ``policy`` on ``snapshot``; ``workload`` gives FGD/kgpu their typical pods."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known policies: {', '.join(POLICIES)}")
    if policy == "random":
        return Framework(
            snapshot, [(RandomScore(rng), 1.0)], selector=RandomGpuSelector(rng), rng=rng, name=policy
        )
    if policy == "dot-product":
        return Framework(snapshot, [(DotProductScore(), 1.0)], rng=rng, name=policy)
    if policy == "gpu-packing":
        return Framework(snapshot, [(GpuPackingScore(), 1.0)], rng=rng, name=policy)
    if policy == "gpu-clustering":
        return Framework(snapshot, [(GpuClusteringScore(snapshot), 1.0)], rng=rng, name=policy)
    if policy == "best-fit":
        return Framework(snapshot, [(BestFitScore(), 1.0)], rng=rng, name=policy)
    if not workload:
        raise ValueError(f"policy {policy!r} needs the workload's requests to learn its typical pods")
    if policy == "fgd":
        plugin: FragmentationScore = FragmentationScore(
            TypicalPods.from_requests(workload, snapshot), snapshot
        )
    else:
        plugin = KgpuScore.for_workload(workload, snapshot)
    return Framework(
        snapshot, [(plugin, 1.0)], selector=FragmentationGpuSelector(plugin), rng=rng, name=policy
    )
