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
