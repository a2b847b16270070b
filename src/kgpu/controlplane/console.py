"""The web console: static HTML, CSS and JavaScript that read the REST API and /metrics.

Everything it needs ships in the package (no CDN), so the console works on machines
without network access. On a server with --auth it asks for an API token, keeps it in
the tab's sessionStorage and sends it as a Bearer token on its reads.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

CONSOLE_DIR = Path(__file__).with_name("console")


def mount_console(app: FastAPI, path: str = "/console") -> None:
    """Serve the console at `path` (its relative links need the trailing slash)."""

    @app.get(path, include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse(f"{path}/")

    app.mount(path, StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
