"""Replicas started by kgpu answer inference only to kgpu's gateway.

A local replica listens on the machine's loopback with no token: under `kgpu server --auth`
any local user could call it directly and skip the gateway's token check. Each replica gets its
own secret: an HMAC, under a random key of the server process, of the replica's URL. The local
backend hands it to the replica in its environment (readable only by the server's own user,
unlike the command line), and the gateway, which knows the URL it sends to, sends it as a
header. A replica started with a secret refuses inference requests without it (403); health and
`/metrics` stay open for probes and Prometheus. One replica's secret opens no other replica.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from functools import lru_cache

GATEWAY_SECRET_ENV = "KGPU_GATEWAY_SECRET"
GATEWAY_SECRET_HEADER = "x-kgpu-gateway-secret"
OPEN_PATHS = ("/metrics", "/v2/health/", "/healthz", "/docs", "/openapi.json")


_KEY = secrets.token_bytes(32)  # this server process's key: replicas it starts die with it


@lru_cache(maxsize=4096)
def replica_secret(origin: str) -> str:
    """The secret of the replica at `origin` (`http://127.0.0.1:PORT`)."""
    return hmac.new(_KEY, origin.encode(), hashlib.sha256).hexdigest()


def origin_of(url: str) -> str:
    """`http://127.0.0.1:8001/v1/embeddings` -> `http://127.0.0.1:8001`."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


class GatewayOnly:
    """ASGI middleware of a replica: inference needs the gateway's secret header."""

    def __init__(self, app, secret: str) -> None:
        self.app = app
        self.secret = secret.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(OPEN_PATHS):
            sent = next((v for k, v in scope["headers"] if k == GATEWAY_SECRET_HEADER.encode()), b"")
            if not hmac.compare_digest(sent, self.secret):
                body = json.dumps(
                    {"error": {"message": "this replica answers only kgpu's gateway; send requests there"}}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def secret_from_environment() -> str | None:
    """The secret a replica was started with, or None (started by hand: no check)."""
    return os.environ.get(GATEWAY_SECRET_ENV) or None
