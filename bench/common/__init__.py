"""What the benchmarks share: the servers under test and how to start them (`servers`, `kgpu_launch`,
`naive_server`, `litserve_server`), the load generator (`loadgen`), workloads and the example model
(`workload`, `model`), the machine facts and results files (`machine`, `results`), and the serving
targets (`targets`)."""
