"""The sim backend: services and pools of `sim` clusters placed on virtual nodes, no process started."""

from kgpu.backends.sim.backend import SimBackend
from kgpu.backends.sim.nodes import SimNodes, sim_cluster_of, sim_flag_errors

__all__ = ["SimBackend", "SimNodes", "sim_cluster_of", "sim_flag_errors"]
