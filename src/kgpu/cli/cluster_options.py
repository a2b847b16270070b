"""`--cluster-grace`: how long `kgpu up` and `kgpu server` wait on a silent cluster before deleting its replicas.

A cluster that stops answering is suspect from its first missed heartbeat (not routed to, its
replicas replaced elsewhere) but not given up (a blip must not delete every replica) until it has
been silent this long; see :mod:`kgpu.multicluster.health`.
"""

from __future__ import annotations

import typer

from kgpu.multicluster.health import DEFAULT_GRACE_S

ClusterGraceOption = typer.Option(
    DEFAULT_GRACE_S,
    "--cluster-grace",
    min=0.0,
    help="seconds a registered cluster may stay silent before it is declared unavailable and the "
    "replicas there of services with spec.placement are deleted (from its first missed heartbeat "
    "it gets no request and their replacements start in the other clusters)",
)
