"""What each cluster a service may run in offers it: the inputs of `kgpu.multicluster.placement`.

From the stored Clusters and NodePools (and this machine's GPUs for a `local` cluster): which
clusters `spec.placement` allows, in its order; for each, its health (healthy, suspect or
unavailable), the price per GPU-hour of the GPU the service would get there (the cheapest pool that
fits it), how many replicas its pools hold once grown to `maxNodes`, and why it cannot host the
service at all (no pool with a fitting GPU, another cluster of the same backend already chosen).

The local and sim backends keep one placement per service, so a service uses at most one cluster of
each of those (a further one is skipped with that reason); any number of Kubernetes clusters (one
custom resource in each).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from kgpu.api.models import CLUSTER_ANNOTATION, Cluster, InferenceService, NodePool
from kgpu.gpu.catalog import get_model, mig_profile_of_resource, vendor_for_resource_domain
from kgpu.gpu.discovery import GPUDevice
from kgpu.gpu.flavors import catalog_price_per_gpu_hour
from kgpu.multicluster.placement import ClusterOffer

LOCAL, KUBERNETES = "local", "kubernetes"
# Price of a cluster whose GPUs' price is unknown (no pool declares one): placed after every priced one.
UNKNOWN_PRICE = float("inf")


@dataclass(frozen=True)
class AllowedClusters:
    clusters: list[Cluster]  # in placement order
    missing: dict[str, str]  # named but not registered -> why


def allowed_clusters(service: InferenceService, registered: Sequence[Cluster]) -> AllowedClusters:
    """`spec.placement.clusters` in their order, then the clusters `clusterSelector` matches, by name."""
    placement = service.spec.placement
    assert placement is not None
    namespace = service.metadata.namespace
    in_project = {c.metadata.name: c for c in registered if c.metadata.namespace == namespace}
    chosen: list[Cluster] = []
    missing: dict[str, str] = {}
    for name in placement.clusters:
        if name in in_project:
            chosen.append(in_project[name])
        else:
            missing[name] = f'no Cluster "{name}" in namespace "{namespace}"'
    selector = placement.cluster_selector
    if selector is not None and selector.match_labels:
        for name in sorted(in_project):
            labels = in_project[name].metadata.labels
            if name not in placement.clusters and all(
                labels.get(k) == v for k, v in selector.match_labels.items()
            ):
                chosen.append(in_project[name])
    return AllowedClusters(chosen, missing)


def _pools_of(cluster: Cluster, pools: Sequence[NodePool]) -> list[NodePool]:
    return [
        p
        for p in pools
        if p.metadata.namespace == cluster.metadata.namespace
        and p.metadata.annotations.get(CLUSTER_ANNOTATION) == cluster.metadata.name
    ]


def replicas_per_node(service: InferenceService, pool: NodePool) -> int:
    """How many of the service's replicas one node of the pool holds by GPUs (0: none fits)."""
    gpu = service.gpu_request()
    flavor, sharing = pool.spec.flavor, pool.spec.sharing
    if gpu is None:
        return 1 << 30  # a CPU replica: its GPUs do not bound it (CPU and memory are the backend's check)
    resource, count = gpu
    if flavor.gpu_model is None:
        return 0
    model = get_model(flavor.gpu_model)
    wanted_models = service.spec.gpu_models
    if vendor_for_resource_domain(resource) != model.vendor or (
        wanted_models and model.name not in wanted_models
    ):
        return 0
    profile = mig_profile_of_resource(resource)
    if profile is not None:
        units = flavor.gpu_count * (sharing.mig_layout or {}).get(profile, 0) if sharing.mode == "mig" else 0
    elif resource.endswith(".shared"):
        shared = sharing.mode in ("time-slicing", "mps")
        units = flavor.gpu_count * (sharing.replicas or 0) if shared else 0
    else:
        units = flavor.gpu_count if sharing.mode == "exclusive" else 0
    return units // count


def _what(service: InferenceService) -> str:
    gpu = service.gpu_request()
    assert gpu is not None
    models = service.spec.gpu_models
    return f"{gpu[0]}: {gpu[1]}" + (f" of {', '.join(models)}" if models else "")


def pools_offer(service: InferenceService, cluster: Cluster, pools: Sequence[NodePool]) -> ClusterOffer:
    """A sim or Kubernetes cluster: its pools that fit the service give the price and the room."""
    name = cluster.metadata.name
    own = _pools_of(cluster, pools)
    if service.gpu_request() is None:
        return ClusterOffer(name, price_per_gpu_hour=0.0)
    if not own and cluster.spec.backend == KUBERNETES:
        # Nodes kgpu does not manage: nothing to count or price; placed after priced clusters.
        return ClusterOffer(name, price_per_gpu_hour=UNKNOWN_PRICE)
    fitting = [(p, n) for p in own if (n := replicas_per_node(service, p)) > 0]
    if not fitting:
        return ClusterOffer(name, reason=f"no node pool of cluster {name} offers {_what(service)}")
    if all(p.spec.max_nodes == 0 for p, _ in fitting):
        pools_named = ", ".join(p.metadata.name for p, _ in fitting)
        return ClusterOffer(name, reason=f"no quota: the pools that fit ({pools_named}) have maxNodes 0")
    prices = [
        p.spec.flavor.price_per_gpu_hour for p, _ in fitting if p.spec.flavor.price_per_gpu_hour is not None
    ]
    return ClusterOffer(
        name,
        price_per_gpu_hour=min(prices) if prices else UNKNOWN_PRICE,
        max_capacity=sum(n * p.spec.max_nodes for p, n in fitting),
    )


def local_offer(service: InferenceService, cluster: Cluster, gpus: Sequence[GPUDevice]) -> ClusterOffer:
    """This machine: its GPUs (by the catalog's price of their model), or its CPU for a CPU service."""
    name = cluster.metadata.name
    gpu = service.gpu_request()
    if gpu is None:
        return ClusterOffer(name, local=True, price_per_gpu_hour=0.0)
    vendor = vendor_for_resource_domain(gpu[0])
    models = [get_model(g.catalog_model) for g in gpus if g.catalog_model]
    fitting = [
        m
        for m in models
        if m.vendor == vendor and (not service.spec.gpu_models or m.name in service.spec.gpu_models)
    ]
    if not fitting:
        return ClusterOffer(name, local=True, reason=f"this machine has no GPU for {_what(service)}")
    prices = [p for m in fitting if (p := catalog_price_per_gpu_hour(m.name)) is not None]
    return ClusterOffer(name, local=True, price_per_gpu_hour=min(prices) if prices else UNKNOWN_PRICE)


def cluster_offers(
    service: InferenceService,
    allowed: Sequence[Cluster],
    pools: Sequence[NodePool],
    gpus: Sequence[GPUDevice],
    health: Callable[[Cluster], str],
    current: Callable[[Cluster], int],
) -> list[ClusterOffer]:
    """One offer per allowed cluster, in placement order."""
    offers = []
    kinds: dict[str, str] = {}  # backend -> the cluster of that backend this service uses
    for cluster in allowed:
        backend = cluster.spec.backend
        offer = (
            local_offer(service, cluster, gpus) if backend == LOCAL else pools_offer(service, cluster, pools)
        )
        reason = offer.reason
        if backend in kinds and backend != KUBERNETES:
            reason = (
                f'{backend} cluster "{kinds[backend]}" already hosts this service '
                "(a service uses one cluster of each backend but kubernetes)"
            )
        elif offer.reason is None:
            kinds[backend] = cluster.metadata.name
        offers.append(replace(offer, health=health(cluster), current=current(cluster), reason=reason))
    return offers
