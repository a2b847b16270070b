"""The kgpu cluster scheduler replaying the openb packing workload against a Kubernetes API (the
in-repo API server double, in its own process), beside `kgpu sim pack` on the same nodes and seed.

    .venv/bin/python -m bench.k8s_scheduler_replay                    # 100-node slice, seed 42
    .venv/bin/python -m bench.k8s_scheduler_replay --nodes 50 --seeds 42,43

For each seed: the workload `kgpu sim pack` places (tuned to 130% of the slice's GPU capacity,
shuffled), created as pending pods with ``schedulerName: kgpu`` through the official client; then
the scheduler lists and watches nodes and pods over HTTP and binds every pod it can through the
Binding API (events written as it goes). Reported: the allocation read back from the API against
`kgpu sim pack`'s allocation at 130% (the end of the same workload), and the scheduler's rate:
pods decided per second and binds per second over the busy time. Writes
bench/results/k8s-scheduler-replay.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

from kubernetes import client as k8s

from bench.common.results import write_results
from kgpu.backends.kubernetes.informer import list_objects, raw_call
from kgpu.backends.kubernetes.replay import (
    allocation_pct,
    packing_workload,
    place_pending,
    trace_objects,
)
from kgpu.backends.kubernetes.scheduler import KgpuScheduler
from kgpu.sim.packing import run_packing
from kgpu.sim.traces import DEFAULT_NODES, DEFAULT_PODS, load_nodes, load_pods

RESULTS = Path(__file__).parent / "results"


def serve(urls: multiprocessing.Queue) -> None:
    from bench.common.kube_api_double import ApiServerDouble

    with ApiServerDouble() as api:
        urls.put(api.url)
        threading.Event().wait()


def api_client(url: str) -> k8s.ApiClient:
    configuration = k8s.Configuration(host=url)
    configuration.connection_pool_maxsize = 8
    return k8s.ApiClient(configuration)


def replay_seed(nodes, pods, seed: int, policy: str) -> dict:
    expected = run_packing(nodes, pods, policy, seed)
    workload = packing_workload(nodes, pods, seed)
    node_objects, pod_objects = trace_objects(nodes, workload)
    urls: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(urls,), daemon=True)
    server.start()
    try:
        core = k8s.CoreV1Api(api_client(urls.get(timeout=30)))
        t0 = time.perf_counter()
        for obj in node_objects:
            raw_call(core.create_node, obj)
        for obj in pod_objects:
            raw_call(core.create_namespaced_pod, "replay", obj)
        create_s = time.perf_counter() - t0
        scheduler = KgpuScheduler(core, policy=policy)
        scheduler.start_watches()
        scheduler.wait_synced(60)
        writer = threading.Thread(target=scheduler.write_events, daemon=True)
        writer.start()
        busy_s = place_pending(scheduler)
        scheduler.drain_events()
        scheduler.stop.set()
        for informer in scheduler.informers:
            informer.close()
        bound_pods, _ = list_objects(core.list_namespaced_pod, namespace="replay")
    finally:
        server.terminate()
        server.join(timeout=5)
    decided = scheduler.stats["bound"] + scheduler.stats["unschedulable"]
    got = allocation_pct(nodes, bound_pods)
    sim = expected["allocation_pct_at"]["130"]
    return {
        "seed": seed,
        "nodes": len(nodes),
        "pods": len(workload),
        "bound": scheduler.stats["bound"],
        "unschedulable": scheduler.stats["unschedulable"],
        "sim_failed": expected["pods_failed"],
        "allocation_pct": round(got, 4),
        "sim_pack_allocation_pct_at_130": sim,
        "difference_points": round(got - sim, 4),
        "create_seconds": round(create_s, 2),
        "busy_seconds": round(busy_s, 3),
        "decisions_per_s": round(decided / busy_s, 1) if busy_s else None,
        "binds_per_s": round(scheduler.stats["bound"] / busy_s, 1) if busy_s else None,
        "bind_conflicts": scheduler.stats["bind_conflicts"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100, help="the first N nodes of the openb node list")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--policy", default="kgpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "k8s-scheduler-replay.json")
    args = parser.parse_args()
    nodes = load_nodes(DEFAULT_NODES)[: args.nodes]
    pods = load_pods(DEFAULT_PODS)
    rows = [replay_seed(nodes, pods, int(s), args.policy) for s in args.seeds.split(",")]
    header = f"{'seed':>4} {'pods':>6} {'bound':>6} {'alloc %':>8} {'sim %':>8} {'diff':>6} {'binds/s':>8} {'decided/s':>9}"
    print(header)
    for r in rows:
        print(
            f"{r['seed']:>4} {r['pods']:>6} {r['bound']:>6} {r['allocation_pct']:>8.2f} "
            f"{r['sim_pack_allocation_pct_at_130']:>8.2f} {r['difference_points']:>6.2f} "
            f"{r['binds_per_s']:>8.1f} {r['decisions_per_s']:>9.1f}"
        )
    write_results(
        args.out,
        "k8s-scheduler-replay",
        {"nodes": args.nodes, "seeds": args.seeds, "policy": args.policy},
        {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        runs=rows,
        targets={"allocation_within_points": 0.1, "binds_per_s_at_least": 100},
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
