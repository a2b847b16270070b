"""kgpu's benchmarks: each module is a script run from the repository root as `python -m bench.<name>`.

Every script prints a table and writes a dated JSON record under bench/results/; what they share
(servers under test, the load generator, workloads, results files) is in `bench.common`.
"""
