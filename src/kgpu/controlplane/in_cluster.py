"""`python -m kgpu.controlplane.in_cluster`: kgpu's API and OpenAI-compatible gateway inside a cluster.

The same server as `kgpu up`, without applying files on start. Inside a cluster, services applied
through this server's REST API (`kgpu apply`) run on that cluster: the server creates their
InferenceService objects, the operator renders the replicas, and the gateway sends each service's
requests to its Service by cluster DNS name (http://NAME.NAMESPACE.svc.cluster.local:80).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kgpu import flags
from kgpu.multicluster.health import DEFAULT_GRACE_S


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kgpu.controlplane.in_cluster", description="kgpu gateway"
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=flags.port, default=8000)
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/kgpu"))
    parser.add_argument(
        "--database-url", default=None, help="SQLAlchemy URL (default: SQLite in --state-dir)"
    )
    parser.add_argument("--public-url", default=None, help="URL clients use (default http://HOST:PORT)")
    parser.add_argument(
        "--in-cluster",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run services on this cluster and route to their Services (default: when inside a cluster)",
    )
    parser.add_argument("--cluster-domain", default="cluster.local", help="the cluster's DNS domain")
    parser.add_argument(
        "--cluster-grace",
        type=float,
        default=DEFAULT_GRACE_S,
        help="seconds a registered cluster may stay silent before its replicas move to other clusters",
    )
    return parser


def platform_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> Any:
    """The platform settings of the gateway for these arguments (a pod has KUBERNETES_SERVICE_HOST)."""
    from kgpu.controlplane.platform import PlatformConfig

    args = build_parser().parse_args(argv)
    in_cluster = (
        args.in_cluster if args.in_cluster is not None else bool(environ.get("KUBERNETES_SERVICE_HOST"))
    )
    return PlatformConfig(
        state_dir=args.state_dir,
        public_url=args.public_url or f"http://{args.host}:{args.port}",
        database_url=args.database_url,
        in_cluster=in_cluster,
        cluster_domain=args.cluster_domain,
        cluster_grace_s=args.cluster_grace,
    )


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from kgpu.controlplane.platform import Platform
    from kgpu.controlplane.server import create_server_app
    from kgpu.http_limits import uvicorn_limits

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    platform = Platform(platform_config(argv))
    uvicorn.run(
        create_server_app(platform),
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=30,
        **uvicorn_limits(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
