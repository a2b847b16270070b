"""Trace loaders and replays for capacity planning and benchmarks."""
