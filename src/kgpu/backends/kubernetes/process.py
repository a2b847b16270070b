"""How a kgpu process in a cluster (the operator, the scheduler) starts: its common flags, logging,
the client's configuration (in-cluster or a kubeconfig), and work done only while holding a Lease."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable

from kubernetes import config

from kgpu import flags
from kgpu.backends.kubernetes.leader import ElectionSettings, run_as_leader


def add_cluster_flags(parser: argparse.ArgumentParser, lease_name: str) -> None:
    parser.add_argument("--kubeconfig", default=None, help="outside a cluster: kubeconfig file")
    parser.add_argument("--context", default=None)
    flags.add_log_level(parser)
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="work only while holding the Lease (run several replicas; the chart does)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease (default: $POD_NAMESPACE, else kgpu-system)",
    )
    parser.add_argument("--leader-election-id", default=lease_name, help="name of the Lease")


def connect(args: argparse.Namespace) -> None:
    """Log to stdout at the chosen level and configure the official client."""
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.kubeconfig:
            config.load_kube_config(config_file=args.kubeconfig, context=args.context)
        else:
            config.load_incluster_config()
    except config.ConfigException as exc:
        where = f"--kubeconfig {args.kubeconfig}" if args.kubeconfig else "in-cluster configuration"
        raise SystemExit(f"error: {where}: {exc}") from None


def run_elected(args: argparse.Namespace, work: Callable[[threading.Event], None]) -> int:
    """``work(stop)`` now, or while this replica holds the Lease; the exit status for the process."""
    if not args.leader_elect:
        work(threading.Event())
        return 0
    settings = ElectionSettings(
        namespace=args.leader_election_namespace or os.environ.get("POD_NAMESPACE") or "kgpu-system",
        lease_name=args.leader_election_id,
    )
    run_as_leader(work, settings)
    return 1  # the lease was lost: restart as a follower rather than work without it
