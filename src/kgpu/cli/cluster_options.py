"""`--cluster-grace`: how long `kgpu up` and `kgpu server` wait on a silent cluster before moving its replicas.

A cluster that stops answering is not given up at the first missed heartbeat (a blip must not move
every replica); see :mod:`kgpu.multicluster.health`.
"""

from __future__ import annotations

import typer

from kgpu.multicluster.health import DEFAULT_GRACE_S

ClusterGraceOption = typer.Option(
    DEFAULT_GRACE_S,
    "--cluster-grace",
    min=0.0,
    help="seconds a registered cluster may stay silent before it is marked unavailable and the "
    "replicas of services with spec.placement move to their other clusters",
)
