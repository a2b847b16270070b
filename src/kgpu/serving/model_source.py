"""Turn a model URI into a local model directory, without ever touching the network.

Accepted forms (the same as `spec.model.uri` in an InferenceService):

- `pkg:<python_package>`: a model shipped inside an installed Python package: its `model/` directory,
  found without importing the package (nothing a tenant names runs in the server).
- `file:///abs/path`: a local directory.
- a plain absolute or relative local path.

- `hf://org/name[@revision]`: a Hugging Face repository already in this machine's (or node's) model
  cache, resolved by `huggingface_hub` with local files only: the cache of `KGPU_MODEL_CACHE`, else
  huggingface_hub's own (`HF_HUB_CACHE`). Every replica on the machine shares it.

Bare hub ids and remote URLs are refused on purpose, and nothing is downloaded: replicas must start
identically on air-gapped nodes, so the model has to be on disk (or in the cache) before a replica is
scheduled; `hf download org/name` fills the cache ahead of time.
"""

from __future__ import annotations

import os
import re
import time
from importlib.machinery import PathFinder
from pathlib import Path
from urllib.parse import unquote, urlparse

from kgpu.api.model_uri import HF_URI
from kgpu.serving.model_layout import ModelLayoutError, read_model_layout

_NETWORK_SCHEMES = ("hf", "http", "https", "s3", "gs", "gcs", "az", "abfs", "ftp", "ssh", "oci")
# `org/name` looks like a Hugging Face hub id; only treated as one when no such local path exists.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PACKAGE_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")

_NO_NETWORK_HINT = "the network is not used to fetch models; give a local path, file:///path or pkg:<package>"


class ModelSourceError(ValueError):
    """The model URI cannot be turned into a usable local model directory."""


def resolve_model_uri(uri: str) -> Path:
    """Return the absolute model directory for `uri`, after checking its layout is loadable."""
    if not isinstance(uri, str) or not uri.strip():
        raise ModelSourceError("model uri is empty; give a local path, file:///path or pkg:<package>")
    uri = uri.strip()
    try:
        directory = _locate(uri)
        if not directory.exists():
            raise ModelSourceError(f"model uri {uri!r}: directory {directory} does not exist")
        if not directory.is_dir():
            raise ModelSourceError(f"model uri {uri!r}: {directory} is not a directory")
        read_model_layout(directory)
        return directory.resolve()
    except ModelLayoutError as exc:
        raise ModelSourceError(f"model uri {uri!r}: {exc}") from exc
    except OSError as exc:  # a name too long, a loop of links, no permission: the path, not the server
        raise ModelSourceError(f"model uri {uri!r}: cannot be read: {exc.strerror or exc}") from None


def locate_model(uri: str) -> Path:
    """Where `uri` points on this machine, which must exist, in whatever layout its server reads.

    For command runtimes: a GGUF file for llama.cpp or a model repository for Triton is not the
    Hugging Face layout `resolve_model_uri` checks, so only the location is checked here.
    """
    try:
        path = _locate(uri.strip())
        if not path.exists():
            raise ModelSourceError(f"model uri {uri!r}: {path} does not exist")
        return path.resolve()
    except OSError as exc:
        raise ModelSourceError(f"model uri {uri!r}: cannot be read: {exc.strerror or exc}") from None


def describe_model_source(uri: str) -> str:
    """What a replica is about to load, for its log: where `uri` resolved and how much is there
    ("pkg:m resolved to /site/m/model in 3 ms: 12 files, 86.7 MiB"). An error message when it does not
    resolve (the load that follows raises the same error)."""
    started = time.perf_counter()
    try:
        directory = resolve_model_uri(uri)
    except ModelSourceError as exc:
        return str(exc)
    took_ms = (time.perf_counter() - started) * 1000
    files = [path for path in directory.rglob("*") if path.is_file()]  # is_file follows cache links
    size_mib = sum(path.stat().st_size for path in files) / 1024**2
    return f"{uri} resolved to {directory} in {took_ms:.0f} ms: {len(files)} files, {size_mib:.1f} MiB"


MODEL_CACHE_ENV = "KGPU_MODEL_CACHE"


def model_cache_dir() -> Path:
    """The model cache replicas of this machine share (a read-only volume on a Kubernetes node)."""
    from huggingface_hub import constants

    return Path(os.environ.get(MODEL_CACHE_ENV) or constants.HF_HUB_CACHE)


def _hub_snapshot(uri: str) -> Path:
    """The cached snapshot of an hf:// repository; never a download (local files only)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    match = HF_URI.match(uri)
    if match is None:
        raise ModelSourceError(f"model uri {uri!r}: write hf://<org>/<name> or hf://<org>/<name>@<revision>")
    cache = model_cache_dir()
    try:
        return Path(
            snapshot_download(
                match["repo"], revision=match["revision"], cache_dir=cache, local_files_only=True
            )
        )
    except (LocalEntryNotFoundError, FileNotFoundError):
        raise ModelSourceError(
            f"model uri {uri!r}: {match['repo']} (revision {match['revision'] or 'main'}) is not in the "
            f"model cache {cache} and kgpu does not download; fill the cache first "
            f"(hf download {match['repo']} --cache-dir {cache})"
        ) from None
    except HFValidationError as exc:
        raise ModelSourceError(f"model uri {uri!r}: {exc}") from None


def _locate(uri: str) -> Path:
    if uri.startswith("pkg:"):
        return _package_model_dir(uri[len("pkg:") :], uri)
    if uri.startswith("hf://"):
        return _hub_snapshot(uri)
    if uri.startswith("pvc://"):
        raise ModelSourceError(f"model uri {uri!r}: pvc:// volumes are mounted on Kubernetes clusters only")
    scheme = _scheme_of(uri)
    if scheme == "file":
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ModelSourceError(
                f"model uri {uri!r}: file URIs must point at this machine ({_NO_NETWORK_HINT})"
            )
        return Path(unquote(parsed.path))
    if scheme in _NETWORK_SCHEMES:
        raise ModelSourceError(f"model uri {uri!r} is a network location; {_NO_NETWORK_HINT}")
    if scheme:
        raise ModelSourceError(f"model uri {uri!r} has unsupported scheme {scheme!r}; {_NO_NETWORK_HINT}")
    path = Path(uri).expanduser()
    if not path.exists() and _HUB_ID.match(uri):
        raise ModelSourceError(
            f"model uri {uri!r} looks like a model hub id and no such local directory exists; {_NO_NETWORK_HINT}"
        )
    return path


def _scheme_of(uri: str) -> str:
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    return match.group(1).lower() if match else ""


def _package_model_dir(package: str, uri: str) -> Path:
    """`<package dir>/model`, found as the import system would find the package, without importing it.

    Importing runs the package's code, and `pkg:` is something a tenant writes: `pkg:this` printed
    to the server's log and `pkg:unittest.__main__` ran an argument parser inside the control
    plane. The directory is looked up on `sys.path` (`PathFinder`, the finder the import system
    uses for installed packages, given each level's own search path so that no parent package is
    imported either) and must hold a model.
    """
    if not _PACKAGE_NAME.match(package):
        raise ModelSourceError(f"model uri {uri!r}: {package!r} is not a valid Python package name")
    locations: list[str] | None = None
    for part in package.split("."):
        spec = PathFinder.find_spec(part, locations)
        if spec is None:
            raise ModelSourceError(
                f"model uri {uri!r}: Python package {package!r} is not installed (pip install it first)"
            )
        if not spec.submodule_search_locations:
            raise ModelSourceError(f"model uri {uri!r}: {package!r} is a module, not a package with a model")
        locations = list(spec.submodule_search_locations)
    model_dir = Path(locations[0]) / "model"
    if not model_dir.is_dir():
        raise ModelSourceError(
            f"model uri {uri!r}: package {package!r} contains no model (no model/ directory)"
        )
    return model_dir
