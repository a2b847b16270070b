"""`python -m kgpu.backends.kubernetes.gateway`: kgpu's API and OpenAI-compatible gateway inside a cluster.

The same server as `kgpu up`, without applying files on start: services are declared as
InferenceService objects in the cluster (or through this server's REST API).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kgpu.backends.kubernetes.gateway", description="kgpu gateway"
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/kgpu"))
    parser.add_argument(
        "--database-url", default=None, help="SQLAlchemy URL (default: SQLite in --state-dir)"
    )
    parser.add_argument("--public-url", default=None, help="URL clients use (default http://HOST:PORT)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from kgpu.controlplane.platform import Platform, PlatformConfig
    from kgpu.controlplane.server import create_server_app

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    platform = Platform(
        PlatformConfig(state_dir=args.state_dir, public_url=public_url, database_url=args.database_url)
    )
    uvicorn.run(create_server_app(platform), host=args.host, port=args.port, timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
