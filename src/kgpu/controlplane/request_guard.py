"""Refuse what a web page in the user's browser can send: cross-site writes and rebound names.

`kgpu up` has no tokens (one user, one machine), so the only thing between a web page the user
has open and the local API is what a browser lets a page send. A page may POST a "simple"
request (content type `text/plain`, a form, or none) to any address without asking first, and
DNS rebinding lets a page's own name resolve to 127.0.0.1, so that even its reads reach the
API. This middleware closes both, for every route on the server (API, gateway, console):

- a request whose `Host` is not a name this server answers to (the bound address, `localhost`
  for a loopback bind, and names the user configures) is refused with 421: a rebound page
  sends its own name. A server bound to every interface (`0.0.0.0`) accepts any `Host`
  unless names are configured: it is reachable by whatever name the network gives it;
- a write (POST, PUT, PATCH, DELETE) with a body must declare JSON, YAML, a patch type or
  binary tensor data (or carry the Open Inference Protocol's binary header, as Triton's client
  does): a page may send none of them cross-site without the browser asking the server first
  (CORS preflight), which this server never allows (415 otherwise);
- a write whose `Origin` is not this server's own origin, nor one the user configures, is
  refused with 403 (also when `Sec-Fetch-Site` says cross-site).

Pure ASGI (no per-request objects beyond a header scan): it sits in front of the gateway.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What writes may declare: JSON (and every +json type: merge patch, JSON patch), YAML, and the
# binary tensor data of the Open Inference Protocol. None is a type a page may send cross-site
# without the browser asking the server first.
ALLOWED_MEDIA_TYPES = frozenset(
    {
        "application/json",
        "application/yaml",
        "application/x-yaml",
        "text/yaml",
        "text/x-yaml",
        "application/octet-stream",
    }
)
# Triton's HTTP client sends binary tensors with this header and no content type; a page cannot
# send the header cross-site without the browser asking first either.
BINARY_TENSOR_HEADER = b"inference-header-content-length"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class GuardSettings:
    """`allowed_hosts`: host names (no port) a request's `Host` may carry; None: any.
    `allowed_origins`: origins (`scheme://host[:port]`) besides the server's own that may write."""

    allowed_hosts: frozenset[str] | None = None
    allowed_origins: frozenset[str] = frozenset()


def guard_settings(bind_host: str, hosts: list[str] = (), origins: list[str] = ()) -> GuardSettings:
    """What a server bound to `bind_host` answers to, plus the names and origins the user adds."""
    extra = {h.strip().lower().strip("[]") for h in hosts if h.strip()}
    allowed_origins = frozenset(o.strip().rstrip("/").lower() for o in origins if o.strip())
    bind = bind_host.strip().lower().strip("[]")
    if bind in WILDCARD_BINDS:
        return GuardSettings(frozenset(extra) if extra else None, allowed_origins)
    names = {bind, *extra}
    if _is_loopback(bind):
        names.update(LOOPBACK_NAMES)
    return GuardSettings(frozenset(names), allowed_origins)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """`Host` without its port: `127.0.0.1:8000` -> `127.0.0.1`, `[::1]:8000` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _allowed_media_type(media_type: str) -> bool:
    return media_type in ALLOWED_MEDIA_TYPES or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class RequestGuard:
    """ASGI middleware: the checks in the module docstring, before any route runs."""

    def __init__(self, app, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await _send_error(send, *refusal)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope) -> tuple[int, str, str] | None:
        """(status, reason, message) for a request to refuse, None to let it through."""
        headers = {k: v for k, v in scope["headers"] if k in _READ_HEADERS}
        host = headers.get(b"host", b"").decode("latin-1")
        allowed_hosts = self.settings.allowed_hosts
        if allowed_hosts is not None and _host_name(host) not in allowed_hosts:
            return (
                421,
                "MisdirectedRequest",
                f"Host {host[:100]!r} is not a name this server answers to (allowed: "
                f"{', '.join(sorted(allowed_hosts))}); add a name with --allow-host",
            )
        if scope["method"] not in WRITE_METHODS:
            return None
        origin = headers.get(b"origin")
        if origin is not None:
            origin_text = origin.decode("latin-1").strip().rstrip("/").lower()
            if not self._origin_allowed(origin_text, host):
                return (
                    403,
                    "Forbidden",
                    f"a write from origin {origin_text[:100]!r} is refused (cross-origin); "
                    "allow an origin with --allow-origin",
                )
        elif headers.get(b"sec-fetch-site", b"") == b"cross-site":
            return 403, "Forbidden", "a cross-site write is refused (Sec-Fetch-Site: cross-site)"
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        if has_body:
            media_type = _media_type(headers.get(b"content-type", b"").decode("latin-1"))
            if not media_type and BINARY_TENSOR_HEADER in headers:
                return None
            if not _allowed_media_type(media_type):
                return (
                    415,
                    "UnsupportedMediaType",
                    f'a write must be sent as JSON, YAML or a patch type (e.g. "application/json"), '
                    f'not "{media_type or "no content type"}"',
                )
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if origin in self.settings.allowed_origins:
            return True
        parts = urlsplit(origin)
        # Same origin: the page was served by this server, under the name the request is sent to.
        return parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()


_READ_HEADERS = frozenset(
    {
        b"host",
        b"origin",
        b"sec-fetch-site",
        b"content-type",
        b"content-length",
        b"transfer-encoding",
        BINARY_TENSOR_HEADER,
    }
)


async def _send_error(send, status: int, reason: str, message: str) -> None:
    body = json.dumps({"error": {"message": message, "reason": reason}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
