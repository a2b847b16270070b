"""What one replica (pod) asks for: CPU, memory and at most one kind of GPU request."""

from __future__ import annotations

from dataclasses import dataclass

MILLI = 1000  # one whole GPU in milli-GPU


@dataclass(frozen=True)
class PodRequest:
    """A placement request.

    Exactly one GPU form may be used: ``gpu_count`` whole GPUs (``gpu_milli == 1000``), a share of
    one GPU (``gpu_count == 1`` and ``gpu_milli < 1000``, or ``gpu_memory_mib`` turned into a share
    of the node's GPU model), one time-sliced replica (``time_slice``), or one MIG device
    (``mig_profile``). ``gpu_models`` lists allowed catalog models (or their aliases); empty: any.
    """

    cpu_milli: int = 0
    memory_mib: int = 0
    gpu_count: int = 0
    gpu_milli: int = 0
    gpu_memory_mib: int = 0
    time_slice: bool = False
    mig_profile: str | None = None
    gpu_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in ("cpu_milli", "memory_mib", "gpu_count", "gpu_milli", "gpu_memory_mib"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field}: must not be negative, got {getattr(self, field)}")
        forms = [self.gpu_count > 0, self.time_slice, self.mig_profile is not None]
        if sum(forms) > 1:
            raise ValueError(
                "a request uses one GPU form: whole/shared GPUs, a time-sliced replica or a MIG device"
            )
        if self.gpu_count > 0:
            if self.gpu_memory_mib and self.gpu_milli:
                raise ValueError("gpu_memory_mib and gpu_milli: give one of them, not both")
            if self.gpu_memory_mib:
                if self.gpu_count != 1:
                    raise ValueError(
                        "gpu_memory_mib: a memory share is a share of one GPU (gpu_count must be 1)"
                    )
            elif not 0 < self.gpu_milli <= MILLI:
                raise ValueError(f"gpu_milli: must be in 1..{MILLI} when gpu_count > 0, got {self.gpu_milli}")
            elif self.gpu_milli < MILLI and self.gpu_count != 1:
                raise ValueError("gpu_milli: a share below 1000 is a share of one GPU (gpu_count must be 1)")
        elif self.gpu_milli or self.gpu_memory_mib:
            raise ValueError("gpu_milli/gpu_memory_mib: need gpu_count >= 1")

    @property
    def kind(self) -> str:
        """'none', 'whole', 'share', 'memory-share', 'time-slice' or 'mig'."""
        if self.mig_profile is not None:
            return "mig"
        if self.time_slice:
            return "time-slice"
        if self.gpu_count == 0:
            return "none"
        if self.gpu_memory_mib:
            return "memory-share"
        return "whole" if self.gpu_milli == MILLI else "share"

    @property
    def total_gpu_milli(self) -> int:
        """The GPU request in milli-GPU as the packing benchmark counts it (shares and whole GPUs)."""
        return self.gpu_count * self.gpu_milli

    @property
    def shape(self) -> tuple:
        """A hashable key: two requests with the same shape are scored identically on a node."""
        return (
            self.cpu_milli,
            self.memory_mib,
            self.gpu_count,
            self.gpu_milli,
            self.gpu_memory_mib,
            self.time_slice,
            self.mig_profile,
            self.gpu_models,
        )
