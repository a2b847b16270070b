"""Prometheus configuration for the embedded platform: scrape config, recording rules, alert rules.

Targets come from the control plane's HTTP service discovery (`/apis/kgpu.dev/v1alpha1/prometheus/
targets`): the server itself (gateway, control plane and GPU metrics) and every ready replica, labelled
with `project`, `service`, `replica`, `node` and `gpu`. Replicas expose those labels themselves, so
their job honours the scraped labels. The gateway's series carry only `service` ("<project>/<name>");
relabeling derives `project` from it so every kgpu series can be grouped the same way.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from kgpu import API_VERSION

RECORDING_FILE = "rules/kgpu-recording.yml"
ALERTS_FILE = "rules/kgpu-alerts.yml"
DEFAULT_QUEUE_TARGET_S = 0.25
_DURATION = re.compile(r"^(\d+(ms|s|m|h))+$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}

# Latency and throughput as users see them: measured at the gateway, per service.
RATE_WINDOW = "1m"
# rate() needs two samples in its window: scraping less often leaves the recording rules without data.
MAX_SCRAPE_INTERVAL_S = 30
SERVICE_RPS = "service:kgpu_requests:rate1m"
SERVICE_ERROR_RPS = "service:kgpu_request_errors:rate1m"
SERVICE_P50 = "service:kgpu_request_duration_seconds:p50_1m"
SERVICE_P99 = "service:kgpu_request_duration_seconds:p99_1m"
SERVICE_QUEUE_P99 = "service:kgpu_queue_duration_seconds:p99_1m"
SERVICE_GPU_UTIL = "service:DCGM_FI_DEV_GPU_UTIL:avg"
SERVICE_GPU_MEMORY = "service:DCGM_FI_DEV_FB_USED:sum"


def _check_duration(name: str, value: str) -> str:
    if not _DURATION.match(value):
        raise ValueError(f'{name}: invalid Prometheus duration "{value}" (use e.g. 1s, 15s, 1m)')
    return value


def _seconds(duration: str) -> float:
    return sum(int(n) * _UNIT_S[unit] for n, unit in re.findall(r"(\d+)(ms|s|m|h)", duration))


def scrape_config(server_url: str, scrape_interval: str = "15s", token_file: Path | None = None) -> dict:
    """prometheus.yml for a kgpu server at ``server_url``.

    ``token_file``: the server's metrics token (under `--auth` its `/metrics` and targets need it);
    replicas' own `/metrics` are scraped without one.
    """
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f'--server: invalid value "{server_url}": expected a URL like http://127.0.0.1:8000')
    _check_duration("--scrape-interval", scrape_interval)
    seconds = _seconds(scrape_interval)
    if not 0 < seconds <= MAX_SCRAPE_INTERVAL_S:
        raise ValueError(
            f'--scrape-interval: invalid value "{scrape_interval}": must be above 0 and at most '
            f"{MAX_SCRAPE_INTERVAL_S:g}s, so that the recording rules' {RATE_WINDOW} rate windows hold two samples"
        )
    base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    discovery = f"{base}/apis/{API_VERSION}/prometheus/targets"

    authorization = (
        {"authorization": {"type": "Bearer", "credentials_file": str(Path(token_file).resolve())}}
        if token_file is not None
        else {}
    )

    def sd(role: str) -> list[dict]:
        return [{"url": f"{discovery}?role={role}", "refresh_interval": scrape_interval, **authorization}]

    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [RECORDING_FILE, ALERTS_FILE],
        "scrape_configs": [
            {
                "job_name": "kgpu",
                "scheme": parts.scheme,
                "metrics_path": f"{parts.path.rstrip('/')}/metrics",
                **authorization,
                "http_sd_configs": sd("server"),
                "metric_relabel_configs": [
                    {
                        # service="<project>/<name>" and no project label -> project="<project>".
                        "source_labels": ["project", "service"],
                        "regex": ";([^/]+)/.+",
                        "target_label": "project",
                        "replacement": "$1",
                    }
                ],
            },
            {
                "job_name": "kgpu-replicas",
                "honor_labels": True,
                "metrics_path": "/metrics",
                "http_sd_configs": sd("replicas"),
            },
        ],
    }


def _by_service(expr: str) -> str:
    return f"sum by (project, service) ({expr})"


def _quantile(q: float, bucket: str) -> str:
    return f"histogram_quantile({q}, sum by (project, service, le) (rate({bucket}[{RATE_WINDOW}])))"


# A GPU in MIG mode is exported twice: the whole GPU (its memory used includes its MIG devices', and it
# lists their users) and each MIG device (sharing the GPU's UUID). Per service, count a MIG device's own
# series and a whole GPU only when it has no MIG devices.
_SERVICE_GPU_MEMORY_EXPR = (
    'sum by (project, service) (DCGM_FI_DEV_FB_USED{service!="",GPU_I_ID!=""} or '
    '(DCGM_FI_DEV_FB_USED{service!="",GPU_I_ID=""} unless on (UUID) DCGM_FI_DEV_FB_USED{GPU_I_ID!=""}))'
)


def recording_rules() -> dict:
    rules = [
        (SERVICE_RPS, _by_service(f"rate(kgpu_gateway_requests_total[{RATE_WINDOW}])")),
        (
            SERVICE_ERROR_RPS,
            _by_service(f'rate(kgpu_gateway_requests_total{{code=~"5..|429"}}[{RATE_WINDOW}])'),
        ),
        (SERVICE_P50, _quantile(0.5, "kgpu_gateway_request_duration_seconds_bucket")),
        (SERVICE_P99, _quantile(0.99, "kgpu_gateway_request_duration_seconds_bucket")),
        (SERVICE_QUEUE_P99, _quantile(0.99, "kgpu_queue_duration_seconds_bucket")),
        # GPUs used by kgpu replicas carry the service label (empty on idle GPUs).
        (SERVICE_GPU_UTIL, 'avg by (project, service) (DCGM_FI_DEV_GPU_UTIL{service!=""})'),
        (SERVICE_GPU_MEMORY, _SERVICE_GPU_MEMORY_EXPR),
    ]
    return {"groups": [{"name": "kgpu-services", "rules": [{"record": r, "expr": e} for r, e in rules]}]}


def alert_rules(queue_target_s: float = DEFAULT_QUEUE_TARGET_S) -> dict:
    if not 0 < queue_target_s < math.inf:  # also refuses nan, which no comparison in a rule matches
        raise ValueError(
            f"--queue-target: invalid value {queue_target_s}: must be a positive number of seconds"
        )
    alerts = [
        {
            "alert": "KgpuReplicaCrashLooping",
            # The restart counter appears with its first restart, which increase() cannot see: >= 2 more
            # restarts within 15 minutes means the replica keeps dying.
            "expr": "increase(kgpu_replica_restarts_total[15m]) >= 2",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Replica {{ $labels.replica }} of {{ $labels.service }} is crash looping",
                "description": 'It restarted {{ $value | printf "%.0f" }} more times in 15 minutes; see `kgpu logs '
                "{{ $labels.replica }}`.",
            },
        },
        {
            "alert": "KgpuQueueTimeAboveTarget",
            "expr": f"{SERVICE_QUEUE_P99} > {queue_target_s:g}",
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Requests of {{ $labels.service }} wait too long for the GPU",
                "description": f"p99 queue time {{{{ $value | humanizeDuration }}}} is above the {queue_target_s:g} s "
                "target: add replicas or raise maxReplicas.",
            },
        },
        {
            "alert": "KgpuGPUXidError",
            "expr": "DCGM_FI_DEV_XID_ERRORS > 0",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID {{ $value }}",
                "description": "The driver reported an XID error (used by {{ $labels.service }}); check `dmesg` "
                "and NVIDIA's XID catalog.",
            },
        },
        {
            "alert": "KgpuGPUMemoryNearFull",
            "expr": "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) > 0.95",
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }}{{ with $labels.GPU_I_PROFILE }} MIG {{ . }}{{ end }} on "
                "{{ $labels.Hostname }} memory "
                "is {{ $value | humanizePercentage }} full",
                "description": "Used by {{ $labels.service }}; lower maxBatchTokens or give it a larger device.",
            },
        },
    ]
    return {"groups": [{"name": "kgpu-alerts", "rules": alerts}]}


def write_prometheus_config(
    output: Path,
    server_url: str,
    scrape_interval: str = "15s",
    queue_target_s: float = DEFAULT_QUEUE_TARGET_S,
    token_file: Path | None = None,
) -> list[Path]:
    """Write prometheus.yml and the two rule files under ``output``; returns their paths."""
    files = {
        "prometheus.yml": scrape_config(server_url, scrape_interval, token_file),
        RECORDING_FILE: recording_rules(),
        ALERTS_FILE: alert_rules(queue_target_s),
    }
    written = []
    for relative, content in files.items():
        path = Path(output) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content, sort_keys=False, width=1000))
        written.append(path)
    return written
