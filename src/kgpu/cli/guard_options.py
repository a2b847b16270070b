"""`--allow-host` and `--allow-origin`: the names and web origins `kgpu up` and `kgpu server` accept.

See :mod:`kgpu.controlplane.request_guard` for why the server checks `Host` and `Origin`.
"""

from __future__ import annotations

import typer

AllowHostOption = typer.Option(
    None,
    "--allow-host",
    help="a name clients use to reach this server (checked against the Host header; repeatable); "
    "the bound address, and localhost on loopback, are always allowed",
)
AllowOriginOption = typer.Option(
    None,
    "--allow-origin",
    help="a web origin (https://host:port) whose pages may write to this server (repeatable); "
    "by default only the server's own origin may",
)
