"""A small client of the kgpu REST API; the CLI talks to the server only through it."""

from __future__ import annotations

import os
from urllib.parse import quote

import httpx

from kgpu import API_VERSION
from kgpu.cli.config import load_config

DEFAULT_SERVER = "http://127.0.0.1:8000"


class ApiError(Exception):
    def __init__(self, status: int, message: str, fields: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields or []


def server_url(explicit: str | None = None) -> str:
    """--server, else $KGPU_SERVER, else the server of `kgpu login`, else the local default."""
    saved = load_config().get("server")
    return (explicit or os.environ.get("KGPU_SERVER") or saved or DEFAULT_SERVER).rstrip("/")


def api_token(explicit: str | None = None) -> str | None:
    """An explicit token, else $KGPU_TOKEN, else the token of `kgpu login`."""
    return explicit or os.environ.get("KGPU_TOKEN") or load_config().get("token") or None


class KgpuClient:
    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = 30.0,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = server_url(base_url)
        token = api_token(token)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            self._http = httpx.Client(
                base_url=self.base_url, timeout=timeout, headers=headers, transport=transport
            )
        except httpx.InvalidURL as exc:
            raise ApiError(0, _bad_url(self.base_url, exc)) from None

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ApiError(
                0,
                f"cannot reach the kgpu server at {self.base_url}: is `kgpu up` running? (set --server or KGPU_SERVER)",
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ApiError(0, _bad_url(self.base_url, exc)) from None
        except httpx.TransportError as exc:  # a timeout, a dropped connection
            raise ApiError(0, f"request to the kgpu server at {self.base_url} failed: {exc}") from None
        if response.status_code == 401:
            raise ApiError(401, f"{_message(response)} (log in with `kgpu login --server URL --token TOKEN`)")
        if response.status_code >= 400:
            try:
                payload = response.json()
            except ValueError:
                raise ApiError(response.status_code, response.text) from None
            error = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(error, dict):
                raise ApiError(response.status_code, error.get("message", response.text), error.get("fields"))
            detail = payload.get("detail", response.text) if isinstance(payload, dict) else response.text
            raise ApiError(response.status_code, str(detail))
        return response

    @staticmethod
    def _path(plural: str, namespace: str | None, name: str | None = None) -> str:
        base = f"/apis/{API_VERSION}"
        path = f"{base}/namespaces/{_segment(namespace)}/{plural}" if namespace else f"{base}/{plural}"
        return f"{path}/{_segment(name)}" if name else path

    def apply(self, plural: str, body: dict) -> tuple[dict, bool]:
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        response = self._request("PUT", self._path(plural, namespace, meta.get("name")), json=body)
        return response.json(), response.status_code == 201

    def get(self, plural: str, namespace: str, name: str) -> dict:
        return self._request("GET", self._path(plural, namespace, name)).json()

    def list(self, plural: str, namespace: str | None) -> list[dict]:
        return self._request("GET", self._path(plural, namespace)).json()["items"]

    def delete(self, plural: str, namespace: str, name: str) -> None:
        self._request("DELETE", self._path(plural, namespace, name))

    def replicas(self, service: str | None = None) -> list[dict]:
        params = {"service": service} if service else {}
        return self._request("GET", f"/apis/{API_VERSION}/replicas", params=params).json()["items"]

    def nodes(self) -> list[dict]:
        return self._request("GET", "/api/v1/nodes").json()["items"]

    def projects(self) -> list[dict]:
        """The projects this token can see."""
        return self._request("GET", f"/apis/{API_VERSION}/projects").json()["items"]

    def tokens(self, project: str) -> list[dict]:
        return self._request("GET", f"/apis/{API_VERSION}/projects/{_segment(project)}/tokens").json()[
            "items"
        ]

    def create_token(self, project: str, role: str, name: str | None = None) -> dict:
        body = {"role": role, **({"name": name} if name else {})}
        return self._request(
            "POST", f"/apis/{API_VERSION}/projects/{_segment(project)}/tokens", json=body
        ).json()

    def revoke_token(self, project: str, token: str) -> dict:
        path = f"/apis/{API_VERSION}/projects/{_segment(project)}/tokens/{_segment(token)}"
        return self._request("DELETE", path).json()["revoked"]

    def put_kubeconfig(self, namespace: str, name: str, content: str) -> None:
        """Store a cluster's kubeconfig on the server (cluster admin; it is never read back)."""
        path = f"/apis/{API_VERSION}/namespaces/{_segment(namespace)}/kubeconfigs/{_segment(name)}"
        self._request("PUT", path, json={"kubeconfig": content})

    def replica_log(self, replica: str, offset: int = 0, tail: int | None = None) -> tuple[str, int]:
        params: dict = {"offset": offset}
        if tail is not None:
            params["tail"] = tail
        response = self._request(
            "GET", f"/apis/{API_VERSION}/replicas/{_segment(replica)}/log", params=params
        )
        return response.text, int(response.headers.get("x-log-offset", "0"))


def _segment(value: str) -> str:
    """One path segment, percent-encoded; "/" or a dot segment would address another path."""
    if "/" in value or value in (".", ".."):
        raise ApiError(
            0, f'"{value}" is not a valid name: names and namespaces are DNS labels (a-z, 0-9, "-")'
        )
    return quote(value, safe="")


def _bad_url(url: str, exc: Exception) -> str:
    return f"invalid kgpu server URL {url!r}: {exc} (set --server or KGPU_SERVER to http://HOST:PORT)"


def _message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if "detail" in payload:
            return str(payload["detail"])
    return response.text
