"""Per-request values every plugin needs, computed once per scheduling cycle."""

from __future__ import annotations

import numpy as np

from kgpu.gpu.catalog import MigProfile
from kgpu.scheduling.requests import MILLI, PodRequest
from kgpu.scheduling.snapshot import ClusterSnapshot


class RequestContext:
    """A request bound to a snapshot: per-node GPU need in milli and the allowed-model mask."""

    def __init__(self, request: PodRequest, snapshot: ClusterSnapshot) -> None:
        self.request = request
        self.snapshot = snapshot
        self.kind = request.kind
        n = snapshot.num_nodes
        if request.gpu_models:
            allowed = [snapshot.model_index(name) for name in request.gpu_models]
            self.model_allowed = np.isin(snapshot.model_idx, [a for a in allowed if a is not None])
        else:
            self.model_allowed = np.ones(n, dtype=bool)
        # milli-GPU needed on each chosen GPU of each node (shares of memory depend on the node's model).
        if self.kind == "memory-share":
            mem = snapshot.model_memory_mib[snapshot.model_idx]
            need = np.where(mem > 0, -(-request.gpu_memory_mib * MILLI // np.maximum(mem, 1)), MILLI + 1)
            self.need_milli = np.where(need <= MILLI, need, MILLI + 1).astype(np.int64)
        else:
            self.need_milli = np.full(n, request.gpu_milli, dtype=np.int64)
        self.gpu_count = request.gpu_count if self.kind in ("whole", "share", "memory-share") else 0
        # Nodes with a GPU of an allowed model (every node for a request without a GPU).
        self.model_mask = (
            np.ones(n, dtype=bool) if self.kind == "none" else self.model_allowed & (snapshot.model_idx >= 0)
        )
        self._mig_profiles: dict[int, MigProfile | None] = {}

    @property
    def shape(self) -> tuple:
        return self.request.shape

    def mig_profile_for(self, model_idx: int) -> MigProfile | None:
        """The requested MIG profile on a snapshot model, or None when that model lacks it."""
        if model_idx not in self._mig_profiles:
            profile = None
            if model_idx >= 0 and self.request.mig_profile:
                try:
                    profile = self.snapshot.models[model_idx].mig_profile(self.request.mig_profile)
                except KeyError:
                    profile = None
            self._mig_profiles[model_idx] = profile
        return self._mig_profiles[model_idx]
