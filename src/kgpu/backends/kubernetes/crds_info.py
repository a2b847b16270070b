"""Group and version of kgpu's custom resources on Kubernetes (from the one API_VERSION)."""

from __future__ import annotations

from kgpu import API_VERSION

GROUP, VERSION = API_VERSION.split("/")
