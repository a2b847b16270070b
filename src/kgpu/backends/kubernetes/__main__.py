"""`python -m kgpu.backends.kubernetes`: run the kgpu operator in a cluster (or against a kubeconfig)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kgpu import flags
from kgpu.backends.kubernetes.leader import LEASE_NAME
from kgpu.backends.kubernetes.nodepool import GPU_OPERATOR_NAMESPACE
from kgpu.backends.kubernetes.operator import KubeApis, Operator
from kgpu.backends.kubernetes.process import add_cluster_flags, connect, run_elected
from kgpu.backends.kubernetes.provisioning import PROVIDERS, ProvisioningSettings
from kgpu.backends.kubernetes.workload import DEFAULT_RUNTIME_IMAGE, SCHEDULER_NAME, WorkloadSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kgpu.backends.kubernetes", description="kgpu operator")
    parser.add_argument(
        "--runtime-image", default=DEFAULT_RUNTIME_IMAGE, help="image of the serving replicas"
    )
    parser.add_argument("--gpu-operator-namespace", default=GPU_OPERATOR_NAMESPACE)
    parser.add_argument(
        "--model-cache-claim",
        default="",
        help="PersistentVolumeClaim with a Hugging Face model cache, mounted read-only into every replica",
    )
    parser.add_argument(
        "--drain-timeout", type=flags.positive_int, default=30, help="seconds replicas get to drain"
    )
    parser.add_argument(
        "--resync", type=flags.positive_seconds, default=60.0, help="seconds between full reconciles"
    )
    parser.add_argument(
        "--scheduler-name",
        default=SCHEDULER_NAME,
        help="schedulerName of the replicas (kgpu's scheduler); '' leaves them to the default scheduler",
    )
    add_provisioning_flags(parser)
    add_cluster_flags(parser, LEASE_NAME)
    return parser


def add_provisioning_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("node provisioning (NodePool minNodes/maxNodes)")
    group.add_argument("--node-provisioner", choices=PROVIDERS, default="none")
    group.add_argument("--capi-cluster", default="", help="Cluster API: the Cluster's name")
    group.add_argument("--capi-namespace", default="default", help="Cluster API: namespace of the Cluster")
    group.add_argument("--capi-kubernetes-version", default="", help="Cluster API: the machines' version")
    group.add_argument(
        "--capi-infrastructure-api-version", default="", help="e.g. infrastructure.cluster.x-k8s.io/v1beta2"
    )
    group.add_argument("--capi-infrastructure-kind", default="", help="e.g. AWSMachineTemplate")
    group.add_argument(
        "--capi-infrastructure-name",
        default="{cluster}-{pool}",
        help="machine template per pool ({cluster}, {pool})",
    )
    group.add_argument(
        "--capi-bootstrap-name", default="{cluster}-{pool}", help="KubeadmConfigTemplate per pool"
    )
    group.add_argument("--karpenter-node-class-group", default="karpenter.k8s.aws")
    group.add_argument("--karpenter-node-class-kind", default="EC2NodeClass")
    group.add_argument("--karpenter-node-class", default="default", help="Karpenter: the node class's name")


def provisioning_settings(args: argparse.Namespace) -> ProvisioningSettings:
    """The flags as settings; a missing Cluster API flag is a usage error naming it."""
    try:
        return ProvisioningSettings(
            provider=args.node_provisioner,
            cluster_name=args.capi_cluster,
            namespace=args.capi_namespace,
            kubernetes_version=args.capi_kubernetes_version,
            infrastructure_api_version=args.capi_infrastructure_api_version,
            infrastructure_kind=args.capi_infrastructure_kind,
            infrastructure_name=args.capi_infrastructure_name,
            bootstrap_name=args.capi_bootstrap_name,
            node_class_group=args.karpenter_node_class_group,
            node_class_kind=args.karpenter_node_class_kind,
            node_class_name=args.karpenter_node_class,
        )
    except ValueError as exc:
        build_parser().error(str(exc))
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    provisioning = provisioning_settings(args)
    connect(args)
    operator = Operator(
        KubeApis.from_client(),
        WorkloadSettings(
            image=args.runtime_image,
            drain_timeout_s=args.drain_timeout,
            scheduler_name=args.scheduler_name,
            model_cache_claim=args.model_cache_claim or None,
        ),
        gpu_operator_namespace=args.gpu_operator_namespace,
        provisioning=provisioning,
    )
    return run_elected(args, lambda stop: operator.run(resync_s=args.resync, stop=stop))


if __name__ == "__main__":
    sys.exit(main())
