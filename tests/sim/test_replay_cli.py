from __future__ import annotations

import json

from typer.testing import CliRunner

from kgpu.cli.sim import sim_app

TRACE = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
    f"2023-11-16 18:17:0{i // 10}.{i % 10}000000,1000,0\n" for i in range(40)
)


def test_replay_json_reports_the_fields(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(TRACE)
    out = CliRunner().invoke(sim_app, ["replay", "--trace", str(path), "--policy", "static", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    for key in ("policy", "requests", "slo_attainment_pct", "failed_requests", "gpu_hours", "node_hours"):
        assert key in data
    assert data["requests"] == 40 and data["replicas"] >= 1 and data["scale_events"] == 0


def test_replay_errors_name_the_cause(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(sim_app, ["replay", "--trace", str(tmp_path / "x.csv")])
    assert missing.exit_code == 1 and "AzurePublicDataset" in missing.output
    bad = runner.invoke(sim_app, ["replay", "--trace", str(tmp_path / "x.csv"), "--policy", "fast"])
    assert bad.exit_code == 2 and "unknown policy 'fast'" in bad.output
    queue = runner.invoke(sim_app, ["replay", "--trace", str(tmp_path / "x.csv"), "--queue", "lifo"])
    assert queue.exit_code == 2 and "unknown queue 'lifo'" in queue.output
    limit = runner.invoke(
        sim_app, ["replay", "--trace", str(tmp_path / "x.csv"), "--container-concurrency", "-1"]
    )
    # typer checks the range (min=0) and names the option
    assert limit.exit_code == 2 and "Invalid value for '--container-concurrency'" in limit.output


def test_replay_queue_option_picks_the_gateway_queue(tmp_path):
    path = tmp_path / "trace.csv"
    # 16 requests of 1000..16000 units fill the one replica; the first finishes at 2 s. A long
    # request (0.1 s) and a short one (0.2 s, deadline 2.4 s) wait: only deadline order serves
    # the short one in the slot that frees at 2 s, in time.
    rows = [f"2023-11-16 18:17:00.0000000,{1000 * (i + 1)},0" for i in range(16)]
    rows += ["2023-11-16 18:17:00.1000000,8000,0", "2023-11-16 18:17:00.2000000,100,0"]
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    met = {}
    for queue in ("fifo", "deadline"):
        out = CliRunner().invoke(
            sim_app, ["replay", "--trace", str(path), "--policy", "hpa", "--queue", queue, "--json"]
        )
        assert out.exit_code == 0, out.output
        met[queue] = json.loads(out.output)["slo_met"]
    assert met == {"fifo": 17, "deadline": 18}


def test_replay_trace_version_rescales_the_arrivals_and_unknown_ones_are_named(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(TRACE)
    runner = CliRunner()
    full = runner.invoke(sim_app, ["replay", "--trace", str(path), "--policy", "kgpu", "--json"])
    half = runner.invoke(
        sim_app, ["replay", "--trace", str(path), "--policy", "kgpu", "--json", "--trace-version", "x0.5"]
    )
    assert full.exit_code == 0 and half.exit_code == 0, half.output
    # 40 requests over 3.9 s, then over 1.95 s: the last one is done about 1.95 s earlier.
    assert json.loads(full.output)["duration_s"] - json.loads(half.output)["duration_s"] > 1.5
    bad = runner.invoke(sim_app, ["replay", "--trace", str(path), "--trace-version", "x3"])
    assert bad.exit_code == 2 and "unknown trace version 'x3'" in bad.output
