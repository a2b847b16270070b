"""Unit tests of every recording and alerting rule `kgpu prometheus-config` writes, run by Prometheus' own
rule test tool (`promtool test rules`).

The rule files come from the real code path (`write_prometheus_config`); the promtool test files are built
here, next to them, from series with the names and labels kgpu emits once Prometheus has scraped them with
the generated configuration (`test_input_series_use_the_names_and_labels_kgpu_emits` checks that against the
real collectors). Each alert has a case where it fires, with its labels and rendered annotations, after its
`for:` duration, and cases where it must not fire; each recording rule has hand-computed values.

Needs promtool (Debian package `prometheus`; `.ci/run` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kgpu.gateway.metrics import _LATENCY_BUCKETS as GATEWAY_BUCKETS
from kgpu.gateway.metrics import GatewayMetrics
from kgpu.serving.batcher import BatchStats
from kgpu.serving.metrics import _LATENCY_BUCKETS as REPLICA_BUCKETS
from kgpu.serving.metrics import ReplicaMetrics
from kgpu.telemetry import prometheus_config as pc
from kgpu.telemetry.dashboard_files import dashboards
from kgpu.telemetry.gpu_exporter import DeviceUser, GPUExporter
from tests.telemetry.fake_nvml import FakeNVML

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="needs promtool (Debian package `prometheus`; .ci/run installs it)",
)

# The scrape interval `kgpu prometheus-config` defaults to; rules are evaluated as often.
STEP = "15s"
NODE = "gpu-node-1"
# Labels Prometheus adds to what it scrapes: the server's job (gateway, control plane and GPU metrics) and
# a replica's job (whose own project/service/replica/node labels are honoured; the target adds `gpu`).
SERVER = {"job": "kgpu", "instance": "10.0.0.5:8000", "node": NODE}
TARGET_LABELS = {"kgpu": {"job", "instance", "node"}, "kgpu-replicas": {"job", "instance", "gpu"}}

MINILM = {"project": "default", "service": "default/minilm"}
BGE = {"project": "team-a", "service": "team-a/bge"}
H200 = 143771  # MiB of framebuffer, as NVML reports an H200
MIG_3G = 71424  # MiB of a 3g.71gb MIG device


def gpu_labels(index: int, users: dict[str, str] | None = None, mig: tuple[str, int] | None = None) -> dict:
    labels = {
        "gpu": str(index),
        "UUID": f"GPU-5c1d7a3e-0000-0000-0000-00000000000{index}",
        "pci_bus_id": f"00000000:{0x19 + 0x22 * index:02X}:00.0",
        "device": f"nvidia{index}",
        "modelName": "NVIDIA H200",
        "Hostname": NODE,
    }
    if mig is not None:
        labels |= {"GPU_I_PROFILE": mig[0], "GPU_I_ID": str(mig[1])}
    users = users or {"project": "", "service": "", "replica": ""}
    return labels | users | SERVER


def replica_labels(service: dict[str, str], replica: str, port: int, gpu: str) -> dict:
    return service | {"replica": replica, "node": NODE} | {
        "job": "kgpu-replicas", "instance": f"127.0.0.1:{port}", "gpu": gpu,
    }  # fmt: skip


def selector(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def series(name: str, labels: dict[str, str], values: str) -> dict:
    return {"series": selector(name, labels), "values": values}


def histogram(
    name: str, labels: dict, bounds: tuple[float, ...], phases: list[tuple[int, dict]]
) -> list[dict]:
    """Cumulative `_bucket` series of a histogram observed at a steady pace: each phase is (intervals,
    {bucket upper bound: observations per interval}); the series start at 0."""
    les = [*bounds, float("inf")]
    totals = {le: 0.0 for le in les}
    points: dict[float, list[float]] = {le: [0.0] for le in les}
    for intervals, per_interval in phases:
        assert set(per_interval) <= set(bounds), per_interval
        for _ in range(intervals):
            for le in les:
                totals[le] += sum(n for bound, n in per_interval.items() if bound <= le)
                points[le].append(totals[le])
    return [
        series(f"{name}_bucket", labels | {"le": "+Inf" if le == float("inf") else f"{le:g}"},
               " ".join(f"{v:g}" for v in points[le]))
        for le in les
    ]  # fmt: skip


def alert(alertname: str, eval_time: str, *fired: tuple[dict, dict]) -> dict:
    return {
        "alertname": alertname,
        "eval_time": eval_time,
        "exp_alerts": [{"exp_labels": labels, "exp_annotations": notes} for labels, notes in fired],
    }


def no_labels(labels: dict, *drop: str) -> dict:
    return {k: v for k, v in labels.items() if k not in drop}


# --- alerts -----------------------------------------------------------------------------------------------


def crash_loop_test() -> dict:
    """minilm-0 restarts at 0 (the counter appears with 1), 2m and 4m; minilm-1 restarts only twice."""
    looping = MINILM | {"replica": "minilm-0"} | SERVER
    once = MINILM | {"replica": "minilm-1"} | SERVER
    fired = (
        looping | {"severity": "warning"},
        {
            "summary": "Replica minilm-0 of default/minilm is crash looping",
            "description": "It restarted 2 more times in 15 minutes; see `kgpu logs minilm-0`.",
        },
    )
    name = "KgpuReplicaCrashLooping"
    return {
        "interval": STEP,
        "input_series": [
            series("kgpu_replica_restarts_total", looping, "1x7 2x7 3x80"),
            series("kgpu_replica_restarts_total", once, "_x19 1x7 2x60"),
        ],
        "alert_rule_test": [
            alert(name, "3m45s"),  # one restart since the counter appeared: not yet a loop
            alert(name, "4m", fired),  # no `for:`: fires with the third restart
            alert(name, "16m", fired),  # 2m..4m restarts still within 15 minutes
            alert(name, "17m"),  # only the 4m restart is left in the window: resolved
            alert(name, "20m"),  # minilm-1 restarted once after its counter appeared: never fires
        ],
    }


def queue_time_test() -> dict:
    """minilm's p99 queue time is 20 ms for 5 minutes, ~495 ms from 5m to 12m, 20 ms again after;
    bge's stays at ~200 ms, below the 250 ms target, throughout."""
    minilm = replica_labels(MINILM, "minilm-0", 40001, "0")
    bge = replica_labels(BGE, "bge-0", 40002, "1")
    name = "KgpuQueueTimeAboveTarget"
    fired = (
        MINILM | {"severity": "warning"},
        {
            "summary": "Requests of default/minilm wait too long for the GPU",
            "description": "p99 queue time 495ms is above the 0.25 s target: add replicas or raise maxReplicas.",
        },
    )
    fast, slow = {0.025: 20}, {0.25: 10, 0.5: 10}
    return {
        "interval": STEP,
        "input_series": [
            *histogram(
                "kgpu_queue_duration_seconds", minilm, REPLICA_BUCKETS, [(20, fast), (28, slow), (40, fast)]
            ),
            *histogram("kgpu_queue_duration_seconds", bge, REPLICA_BUCKETS, [(80, {0.1: 30, 0.25: 10})]),
        ],
        "alert_rule_test": [
            alert(name, "5m"),  # healthy
            alert(name, "10m"),  # above target since 5m15s: pending, not yet for 5 minutes
            alert(name, "10m15s", fired),
            alert(name, "12m", fired),
            alert(name, "13m15s"),  # the slow minute has left the 1m window: resolved
        ],
        "promql_expr_test": [
            # 10 per 15 s in (0.1, 0.25] and 10 in (0.25, 0.5]: p99 = 0.25 + 0.25 * (0.99 * 20 - 10) / 10.
            {
                "expr": pc.SERVICE_QUEUE_P99,
                "eval_time": "11m",
                "exp_samples": [
                    {"labels": selector(pc.SERVICE_QUEUE_P99, MINILM), "value": 0.495},
                    # 30 per 15 s in (0.05, 0.1], 10 in (0.1, 0.25]: p99 = 0.1 + 0.15 * (0.99 * 40 - 30) / 10
                    # = 0.244, as float64 arithmetic gives it (promtool compares exactly).
                    {"labels": selector(pc.SERVICE_QUEUE_P99, BGE), "value": 0.24399999999999997},
                ],
            },
        ],
    }


def xid_test() -> dict:
    """GPU 0 (minilm's) reports XID 79 at 3m until the node is rebooted at 8m; GPU 1 never reports one."""
    gpu0 = gpu_labels(0, MINILM | {"replica": "minilm-0"})
    gpu1 = gpu_labels(1)
    name = "KgpuGPUXidError"
    fired = (
        gpu0 | {"severity": "critical"},
        {
            "summary": f"GPU 0 on {NODE} reported XID 79",
            "description": "The driver reported an XID error (used by default/minilm); check `dmesg` and "
            "NVIDIA's XID catalog.",
        },
    )
    return {
        "interval": STEP,
        "input_series": [
            series("DCGM_FI_DEV_XID_ERRORS", gpu0, "0x11 79x19 0x20"),
            series("DCGM_FI_DEV_XID_ERRORS", gpu1, "0x52"),
        ],
        "alert_rule_test": [
            alert(name, "2m45s"),
            alert(name, "3m", fired),  # critical: no `for:`
            alert(name, "7m45s", fired),
            alert(name, "8m"),  # the exporter restarted with the node: no XID since
        ],
    }


def gpu_memory_test() -> dict:
    """GPU 0 fills to 138000 of 143771 MiB (96%) at 2m and stays there; the 3g.71gb MIG device of GPU 1
    spikes to 69000 of 71424 MiB (97%) for 3 minutes only; GPU 2 sits at 50%."""
    gpu0 = gpu_labels(0, MINILM | {"replica": "minilm-0"})
    mig = gpu_labels(1, BGE | {"replica": "bge-0"}, mig=("3g.71gb", 2))
    gpu2 = gpu_labels(2, MINILM | {"replica": "minilm-1"})
    name = "KgpuGPUMemoryNearFull"
    fired = (
        gpu0 | {"severity": "warning"},
        {
            "summary": f"GPU 0 on {NODE} memory is 95.99% full",
            "description": "Used by default/minilm; lower maxBatchTokens or give it a larger device.",
        },
    )
    return {
        "interval": STEP,
        "input_series": [
            series("DCGM_FI_DEV_FB_USED", gpu0, "100000x7 138000x60"),
            series("DCGM_FI_DEV_FB_FREE", gpu0, f"{H200 - 100000}x7 {H200 - 138000}x60"),
            series("DCGM_FI_DEV_FB_USED", mig, "30000x3 69000x11 30000x60"),
            series("DCGM_FI_DEV_FB_FREE", mig, f"{MIG_3G - 30000}x3 {MIG_3G - 69000}x11 {MIG_3G - 30000}x60"),
            series("DCGM_FI_DEV_FB_USED", gpu2, "71885x70"),
            series("DCGM_FI_DEV_FB_FREE", gpu2, f"{H200 - 71885}x70"),
        ],
        "alert_rule_test": [
            alert(name, "6m45s"),  # above 95% since 2m, pending
            alert(name, "7m", fired),  # after `for: 5m`; the MIG device's 3-minute spike never fired
            alert(name, "15m", fired),
        ],
    }


def gpu_memory_mig_annotation_test() -> dict:
    """A full MIG device names its profile in the summary."""
    mig = gpu_labels(1, BGE | {"replica": "bge-0"}, mig=("3g.71gb", 2))
    fired = (
        mig | {"severity": "warning"},
        {
            "summary": f"GPU 1 MIG 3g.71gb on {NODE} memory is 99% full",
            "description": "Used by team-a/bge; lower maxBatchTokens or give it a larger device.",
        },
    )
    return {
        "interval": STEP,
        "input_series": [
            series("DCGM_FI_DEV_FB_USED", mig, f"{MIG_3G - 714}x30"),
            series("DCGM_FI_DEV_FB_FREE", mig, "714x30"),
        ],
        "alert_rule_test": [alert("KgpuGPUMemoryNearFull", "5m", fired)],
    }


# --- recording rules ----------------------------------------------------------------------------------------


def gateway_recording_test() -> dict:
    """Gateway counters and latency histograms of two services, at a steady pace; values read at 5m."""
    minilm, bge = MINILM | SERVER, BGE | SERVER
    rate = pc.SERVICE_RPS
    errors = pc.SERVICE_ERROR_RPS
    # minilm: 60 requests per 15 s: 15 in (0.1, 0.25], 30 in (0.25, 0.5], 15 in (0.5, 1].
    # bge: 30 per 15 s, all in (0.01, 0.025].
    return {
        "interval": STEP,
        "input_series": [
            series("kgpu_gateway_requests_total", minilm | {"code": "200"}, "0+15x40"),  # 1 /s
            series("kgpu_gateway_requests_total", minilm | {"code": "503"}, "0+3.75x40"),  # 0.25 /s
            series("kgpu_gateway_requests_total", minilm | {"code": "429"}, "0+7.5x40"),  # 0.5 /s
            series("kgpu_gateway_requests_total", minilm | {"code": "400"}, "0+0.75x40"),  # 0.05 /s
            series("kgpu_gateway_requests_total", bge | {"code": "200"}, "0+30x40"),  # 2 /s
            *histogram(
                "kgpu_gateway_request_duration_seconds",
                minilm,
                GATEWAY_BUCKETS,
                [(40, {0.25: 15, 0.5: 30, 1: 15})],
            ),
            *histogram("kgpu_gateway_request_duration_seconds", bge, GATEWAY_BUCKETS, [(40, {0.025: 30})]),
        ],
        "promql_expr_test": [
            {
                "expr": rate,
                "eval_time": "5m",
                "exp_samples": [
                    {"labels": selector(rate, MINILM), "value": 1.8},
                    {"labels": selector(rate, BGE), "value": 2},
                ],
            },
            # 5xx and 429 only: a client's 400 is not a service error; bge answered everything.
            {
                "expr": errors,
                "eval_time": "5m",
                "exp_samples": [
                    {"labels": selector(errors, MINILM), "value": 0.75},
                ],
            },
            # minilm p50: rank 30 of 60 lies in (0.25, 0.5] holding 15..45: 0.25 + 0.25 * 15/30.
            # bge: every request in (0.01, 0.025]: p50 = 0.01 + 0.015 * 0.5, p99 = 0.01 + 0.015 * 0.99.
            {
                "expr": pc.SERVICE_P50,
                "eval_time": "5m",
                "exp_samples": [
                    {"labels": selector(pc.SERVICE_P50, MINILM), "value": 0.375},
                    {"labels": selector(pc.SERVICE_P50, BGE), "value": 0.0175},
                ],
            },
            # minilm p99: rank 59.4 lies in (0.5, 1] holding 45..60: 0.5 + 0.5 * 14.4/15.
            {
                "expr": pc.SERVICE_P99,
                "eval_time": "5m",
                "exp_samples": [
                    {"labels": selector(pc.SERVICE_P99, MINILM), "value": 0.98},
                    {"labels": selector(pc.SERVICE_P99, BGE), "value": 0.02485},
                ],
            },
        ],
    }


def gpu_recording_test() -> dict:
    """minilm runs on GPUs 0 and 2; bge on both MIG devices of GPU 1, whose whole-GPU series counts the
    memory of its MIG devices again; GPU 3 is idle."""
    minilm0 = gpu_labels(0, MINILM | {"replica": "minilm-0"})
    minilm1 = gpu_labels(2, MINILM | {"replica": "minilm-1"})
    gpu1 = gpu_labels(1, BGE | {"replica": "bge-0,bge-1"})
    mig_a = gpu_labels(1, BGE | {"replica": "bge-0"}, mig=("4g.71gb", 1))
    mig_b = gpu_labels(1, BGE | {"replica": "bge-1"}, mig=("3g.71gb", 2))
    idle = gpu_labels(3)
    util, memory = pc.SERVICE_GPU_UTIL, pc.SERVICE_GPU_MEMORY
    return {
        "interval": STEP,
        "input_series": [
            series("DCGM_FI_DEV_GPU_UTIL", minilm0, "40x8"),
            series("DCGM_FI_DEV_GPU_UTIL", minilm1, "70x8"),
            series("DCGM_FI_DEV_GPU_UTIL", idle, "0x8"),  # a GPU in MIG mode (GPU 1) reports none
            series("DCGM_FI_DEV_FB_USED", minilm0, "20000x8"),
            series("DCGM_FI_DEV_FB_USED", minilm1, "12000x8"),
            series("DCGM_FI_DEV_FB_USED", gpu1, "45000x8"),
            series("DCGM_FI_DEV_FB_USED", mig_a, "30000x8"),
            series("DCGM_FI_DEV_FB_USED", mig_b, "15000x8"),
            series("DCGM_FI_DEV_FB_USED", idle, "0x8"),
        ],
        "promql_expr_test": [
            {
                "expr": util,
                "eval_time": "1m",
                "exp_samples": [
                    {
                        "labels": selector(util, MINILM),
                        "value": 55,
                    },  # (40 + 70) / 2; the idle GPU is nobody's
                ],
            },
            {
                "expr": memory,
                "eval_time": "1m",
                "exp_samples": [
                    {"labels": selector(memory, MINILM), "value": 32000},
                    {
                        "labels": selector(memory, BGE),
                        "value": 45000,
                    },  # 30000 + 15000, not the GPU's 45000 again
                ],
            },
        ],
    }


CASES = {
    "crash-loop": crash_loop_test,
    "queue-time": queue_time_test,
    "xid": xid_test,
    "gpu-memory": gpu_memory_test,
    "gpu-memory-mig": gpu_memory_mig_annotation_test,
    "gateway-recording": gateway_recording_test,
    "gpu-recording": gpu_recording_test,
}


def write_tests(directory: Path, name: str, tests: list[dict]) -> Path:
    path = directory / f"{name}.test.yml"
    content = {
        "rule_files": [pc.RECORDING_FILE, pc.ALERTS_FILE],
        "evaluation_interval": STEP,
        "group_eval_order": ["kgpu-services", "kgpu-alerts"],
        "tests": tests,
    }
    path.write_text(yaml.safe_dump(content, sort_keys=False, width=1000))
    return path


def promtool_test(directory: Path, test_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROMTOOL, "test", "rules", test_file.name], cwd=directory, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    """The files `kgpu prometheus-config` writes, with the default queue target."""
    pc.write_prometheus_config(tmp_path, "http://10.0.0.5:8000")
    return tmp_path


@needs_promtool
@pytest.mark.parametrize("case", CASES)
def test_promtool_rule_unit_tests_pass(generated: Path, case: str) -> None:
    result = promtool_test(generated, write_tests(generated, case, [CASES[case]()]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_shipped_rule_has_a_promtool_test() -> None:
    tests = [CASES[case]() for case in CASES]
    tested_alerts = {t["alertname"] for test in tests for t in test.get("alert_rule_test", [])}
    tested_records = {t["expr"] for test in tests for t in test.get("promql_expr_test", [])}
    alerts = {r["alert"] for g in pc.alert_rules()["groups"] for r in g["rules"]}
    records = {r["record"] for g in pc.recording_rules()["groups"] for r in g["rules"]}
    assert tested_alerts == alerts
    assert tested_records == records
    # Each alert is seen firing and, at another time, not firing.
    for name in alerts:
        cases = [t for test in tests for t in test.get("alert_rule_test", []) if t["alertname"] == name]
        assert any(c["exp_alerts"] for c in cases) and any(not c["exp_alerts"] for c in cases), name


def _emitted_label_sets() -> dict[str, set[frozenset[str]]]:
    """Series names and label names from the real collectors: gateway, one replica, the GPU exporter."""
    gateway = GatewayMetrics()
    gateway.observe("default/minilm", 200, 0.1)
    gateway.replica_restarts.labels(service="default/minilm", replica="minilm-0").inc()
    replica = ReplicaMetrics("default/minilm", "minilm-0", node=NODE)
    replica.observe_batch(
        BatchStats(size=1, tokens=4, padded_tokens=4, compute_seconds=0.01, queue_seconds=[0.1])
    )
    users = [DeviceUser("default", "default/minilm", "minilm-0", gpu_index=0),
             DeviceUser("team-a", "team-a/bge", "bge-0", mig_uuid="MIG-b")]  # fmt: skip
    gpus = GPUExporter(lambda: users, nvml=FakeNVML(), hostname=NODE)
    gpu_registry = CollectorRegistry()
    gpu_registry.register(gpus)
    emitted: dict[str, set[frozenset[str]]] = {}
    for job, registry in (("kgpu", gateway.registry), ("kgpu-replicas", replica.registry),
                          ("kgpu", gpu_registry)):  # fmt: skip
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            for sample in family.samples:
                labels = frozenset(sample.labels) | TARGET_LABELS[job]
                if job == "kgpu":
                    labels |= {"project"}  # the kgpu job's relabeling derives it from `service`
                emitted.setdefault(sample.name, set()).add(labels)
    return emitted


def test_input_series_use_the_names_and_labels_kgpu_emits() -> None:
    emitted = _emitted_label_sets()
    for case, build in CASES.items():
        for item in build()["input_series"]:
            (family,) = text_string_to_metric_families(item["series"] + " 0\n")
            (sample,) = family.samples
            assert sample.name in emitted, (case, sample.name)
            assert frozenset(sample.labels) in emitted[sample.name], (case, item["series"])


MUTANTS = {
    # (rule file, text in the generated rules, replacement, the test that must catch it)
    "crash-loop threshold": (pc.ALERTS_FILE, "[15m]) >= 2", "[15m]) >= 3", "crash-loop"),
    "queue target": (pc.ALERTS_FILE, "p99_1m > 0.25", "p99_1m > 0.5", "queue-time"),
    "xid comparison": (pc.ALERTS_FILE, "XID_ERRORS > 0", "XID_ERRORS > 100", "xid"),
    "memory threshold": (pc.ALERTS_FILE, ") > 0.95", ") > 0.97", "gpu-memory"),
    "p99 quantile": (pc.RECORDING_FILE, "histogram_quantile(0.99, sum by (project, service, le) "
                     "(rate(kgpu_gateway", "histogram_quantile(0.9, sum by (project, service, le) "
                     "(rate(kgpu_gateway", "gateway-recording"),
}  # fmt: skip


@needs_promtool
@pytest.mark.parametrize("mutant", MUTANTS)
def test_promtool_fails_when_a_rule_is_mutated(generated: Path, mutant: str) -> None:
    relative, old, new, case = MUTANTS[mutant]
    path = generated / relative
    text = path.read_text()
    assert text.count(old) == 1, (old, text)
    path.write_text(text.replace(old, new))
    result = promtool_test(generated, write_tests(generated, case, [CASES[case]()]))
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr


def rps_every(interval: str, seconds: int, eval_times: list[str], expected: float | None) -> dict:
    """1 request per second at the gateway, scraped every ``interval``."""
    rps = pc.SERVICE_RPS
    samples = [] if expected is None else [{"labels": selector(rps, MINILM), "value": expected}]
    return {
        "interval": interval,
        "input_series": [
            series("kgpu_gateway_requests_total", MINILM | SERVER | {"code": "200"}, f"0+{seconds}x20")
        ],
        "promql_expr_test": [{"expr": rps, "eval_time": t, "exp_samples": samples} for t in eval_times],
    }


@needs_promtool
def test_scrape_interval_is_bounded_by_the_rate_window(generated: Path) -> None:
    # At 30 s the 1m windows always hold two samples; at 45 s some hold one and the rule records nothing.
    ok = write_tests(generated, "every-30s", [rps_every("30s", 30, ["2m", "2m15s", "3m45s"], 1)])
    result = promtool_test(generated, ok)
    assert result.returncode == 0, result.stdout + result.stderr
    gap = write_tests(generated, "every-45s", [rps_every("45s", 45, ["2m"], None)])
    result = promtool_test(generated, gap)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_interval_longer_than_30s_is_refused() -> None:
    assert pc.scrape_config("http://10.0.0.5:8000", "30s")["global"]["scrape_interval"] == "30s"
    for too_long in ("45s", "1m", "0s"):
        with pytest.raises(ValueError, match=f'--scrape-interval: invalid value "{too_long}"'):
            pc.scrape_config("http://10.0.0.5:8000", too_long)


@needs_promtool
def test_service_dashboard_gpu_memory_agrees_with_the_recording_rule(generated: Path) -> None:
    """The service SLO dashboard's GPU memory panel, with all projects and services selected, over the
    recording rule's input (a GPU in MIG mode included)."""
    panels = dashboards()["service-slos.json"]["panels"]
    (expr,) = [t["expr"] for p in panels for t in p.get("targets", []) if "DCGM_FI_DEV_FB_USED" in t["expr"]]
    # Grafana expands "All" of a multi-value variable to the alternation of its values.
    expr = expr.replace("$project", "(default|team-a)").replace("$service", "(default/minilm|team-a/bge)")
    test = gpu_recording_test()
    test["promql_expr_test"] = [
        {
            "expr": expr,
            "eval_time": "1m",
            "exp_samples": [
                {"labels": selector("", {"service": MINILM["service"]}), "value": 32000},
                {"labels": selector("", {"service": BGE["service"]}), "value": 45000},
            ],
        }
    ]
    result = promtool_test(generated, write_tests(generated, "dashboard-memory", [test]))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("target", [0.0, -1.0, float("nan"), float("inf")])
def test_queue_target_must_be_a_positive_finite_number(target: float) -> None:
    # nan wrote "> nan", an alert that can never fire, without a word.
    with pytest.raises(ValueError, match="--queue-target: invalid value"):
        pc.alert_rules(target)
