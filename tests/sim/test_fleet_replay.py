"""The fleet replay on short synthetic traces whose results can be worked out by hand.

Service model (kgpu.sim.replay): a request's work is context + 10 x generated tokens, served at
1000 units/s while at most 8 share a replica; a replica serves 20 s after it starts. The autoscaler
is kgpu's with minReplicas = maxReplicas, so the desired count is fixed and only the split moves.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.policy import ScalingDecision
from kgpu.cli.sim import sim_app
from kgpu.sim.azure_trace import TraceRequest
from kgpu.sim.fleet import FleetError, load_fleet, parse_fleet
from kgpu.sim.fleet_replay import FleetReplayLoop, replay_fleet
from kgpu.sim.replay import ServiceModel


def req(t: float, context: int, generated: int = 0) -> TraceRequest:
    return TraceRequest(t, context, generated)


def fixed(replicas: int) -> AutoscalingSpec:
    return AutoscalingSpec(policy="kgpu", min_replicas=replicas, max_replicas=replicas, target=16)


def fleet(outages: list | None = None, policy: str = "fill") -> dict:
    """cheap: one node of 2 GPUs at $1/GPU-hour; dear: one node of 4 GPUs at $3 (declared first)."""
    return {
        "clusters": [
            {
                "name": "dear",
                "pools": [
                    {
                        "flavor": {"gpuModel": "H100-80GB", "gpuCount": 4, "pricePerGpuHour": 3.0},
                        "minNodes": 1,
                        "maxNodes": 1,
                    }
                ],
            },
            {
                "name": "cheap",
                "pools": [
                    {
                        "flavor": {"gpuModel": "H100-80GB", "gpuCount": 2, "pricePerGpuHour": 1.0},
                        "minNodes": 1,
                        "maxNodes": 1,
                    }
                ],
            },
        ],
        "placement": {"policy": policy, "clusters": ["dear", "cheap"]},
        "failoverAfter": "10s",
        "outages": outages or [],
    }


def run(trace, document: dict, replicas: int) -> tuple[FleetReplayLoop, object]:
    loop = FleetReplayLoop(trace, parse_fleet(document), "kgpu", ServiceModel(), fixed(replicas), 10.0)
    result = loop.run()
    return loop, loop.fleet_result(result, result.duration_s)


def test_fill_takes_the_cheap_cluster_first_and_overflows_to_the_dear_one():
    trace = [req(0, 1000), req(100, 1000)]  # each 1 s alone; the replay ends at 101 s
    _, result = run(trace, fleet(), replicas=3)
    by_cluster = {c.name: c for c in result.clusters}
    assert by_cluster["cheap"].max_replicas == 2  # all it holds
    assert by_cluster["dear"].max_replicas == 1  # the overflow
    assert result.replay.duration_s == pytest.approx(101.0)
    assert by_cluster["cheap"].gpu_hours == pytest.approx(2 * 101 / 3600)
    assert by_cluster["dear"].gpu_hours == pytest.approx(101 / 3600)
    assert result.cost == pytest.approx(2 * 101 / 3600 * 1.0 + 101 / 3600 * 3.0)
    # Node cost bills whole nodes: 2 GPUs at $1 and 4 GPUs at $3 for 101 s.
    assert result.node_cost == pytest.approx(101 / 3600 * (2 * 1.0 + 4 * 3.0))
    assert all(f["replicas.cheap"] == 2 and f["replicas.dear"] == 1 for f in result.replay.timeline)


def test_spread_balances_the_clusters():
    _, result = run([req(0, 1000)], fleet(policy="spread"), replicas=4)
    assert {c.name: c.max_replicas for c in result.clusters} == {"dear": 2, "cheap": 2}


def outage_trace() -> list[TraceRequest]:
    return [
        req(0, 1000),  # done at 1 s: met
        req(95, 1000, 500),  # work 6000; by 100 s it has streamed (prompt done at 96 s): cut
        req(99, 2000, 100),  # work 3000; at 100 s 1000 of its 2000-token prompt done: retried
        req(118, 1000),  # no ready replica until the dear ones at 120 s: done 121 s, met (3 s <= 4 s)
        req(200, 1000),  # met, on the dear cluster
        req(500, 1000),  # met, on the cheap cluster again; the replay ends at 501 s
    ]


def test_an_outage_moves_the_replicas_and_they_come_back_by_the_policy():
    outage = [{"cluster": "cheap", "start": 100, "end": "400s"}]
    loop, result = run(outage_trace(), fleet(outage), replicas=2)
    # Heartbeats every 2 s: the first miss at 100 s makes it suspect, 10 s later it is declared
    # unavailable, and it is healthy at the first heartbeat it answers (400 s).
    assert [(e["t"], e["event"]) for e in result.events] == [
        (100, "outage"),
        (100, "suspect"),
        (110, "unavailable"),
        (400, "healthy"),
    ]
    cheap = [r for r in loop.replicas if r.cluster == 1]
    dear = [r for r in loop.replicas if r.cluster == 0]
    # Suspect at once: replacements start on the dear cluster then (serving 20 s later, not 10 s
    # of grace + 20 s); the cheap ones are deleted only when it is declared unavailable.
    assert [(r.started_at, r.stopped_at) for r in cheap[:2]] == [(0.0, 110.0), (0.0, 110.0)]
    assert [(r.started_at, r.ready_at) for r in dear] == [(100.0, 120.0), (100.0, 120.0)]
    # Back on the cheap cluster at its return; the dear ones stay until those serve (make before break).
    assert [(r.started_at, r.ready_at, r.stopped_at) for r in cheap[2:]] == [(400.0, 420.0, None)] * 2
    assert [r.stopped_at for r in dear] == [420.0, 420.0]

    replay = result.replay
    assert result.retried_requests == 1 and result.cut_streams == 1
    assert replay.failed_requests == 0  # nothing timed out in the gateway queue
    assert replay.completed == 5
    # Met: the requests at 0, 118, 200 and 500 s. Missed: the cut stream; the retried one (waits to
    # 120 s, runs 3 s: 24 s > 2 + 2 x 3 s).
    assert replay.slo_met == 4 and replay.slo_attainment_pct == pytest.approx(400 / 6)
    assert sorted(replay.missed_arrivals_s) == [95.0, 99.0]
    # Per cluster: the cheap one served 0 and 500 s and cut 95 s; the dear one served the rest.
    by_cluster = {c.name: (c.requests, c.slo_attainment_pct) for c in result.clusters}
    assert by_cluster == {"cheap": (3, pytest.approx(200 / 3)), "dear": (3, pytest.approx(200 / 3))}
    end = 501.0
    assert replay.duration_s == pytest.approx(end)
    # The suspect cluster's replicas are billed until they are deleted (110 s).
    cheap_gpu_s = 2 * 110 + 2 * (end - 400)
    dear_gpu_s = 2 * (420 - 100)
    assert result.cost == pytest.approx(cheap_gpu_s / 3600 * 1.0 + dear_gpu_s / 3600 * 3.0)
    assert replay.gpu_hours == pytest.approx((cheap_gpu_s + dear_gpu_s) / 3600)


def test_a_blip_shorter_than_the_grace_period_keeps_the_replicas_and_the_surge_goes():
    outage = [{"cluster": "cheap", "start": 100, "end": 105}]
    trace = [req(0, 1000), req(103, 1000), req(200, 1000)]
    loop, result = run(trace, fleet(outage), replicas=2)
    # Suspect at 100 s; the heartbeat at 106 s is answered: healthy again, never declared unavailable.
    assert [(e["t"], e["event"]) for e in result.events] == [
        (100, "outage"),
        (100, "suspect"),
        (106, "healthy"),
    ]
    cheap = [r for r in loop.replicas if r.cluster == 1]
    dear = [r for r in loop.replicas if r.cluster == 0]
    assert [(r.started_at, r.stopped_at) for r in cheap] == [(0.0, None), (0.0, None)]  # kept
    # The surge started at 100 s is surplus at 106 s: not ready yet, so it goes first.
    assert [(r.started_at, r.stopped_at) for r in dear] == [(100.0, 106.0), (100.0, 106.0)]
    # The request at 103 s waits at the gateway until the cheap replicas are trusted again (106 s),
    # done at 107 s: 4 s, within its SLO (2 + 2 x 1 s).
    assert result.replay.slo_met == 3 and result.replay.failed_requests == 0
    assert result.cost == pytest.approx(2 * 201 / 3600 * 1.0 + 2 * 6 / 3600 * 3.0)


def test_an_outage_of_a_cluster_the_service_does_not_use_changes_nothing():
    quiet = run(outage_trace(), fleet(), replicas=2)[1].to_dict()
    document = fleet([{"cluster": "cheap", "start": 100, "end": 400}])
    document["placement"]["clusters"] = ["dear"]
    moved = run(outage_trace(), document, replicas=2)[1]
    assert moved.events == [] and moved.retried_requests == 0
    assert moved.replay.slo_attainment_pct == 100.0
    assert quiet["slo_attainment_pct"] == 100.0


def test_fleet_errors_name_the_field(tmp_path):
    document = fleet([{"cluster": "moon", "start": "10m", "end": "5m"}])
    with pytest.raises(FleetError) as info:
        parse_fleet(document)
    assert 'outages[0].cluster: Unsupported value: "moon"' in str(info.value)
    assert "outages[0].end" in str(info.value)
    document = fleet()
    document["clusters"][1]["pools"][0]["maxNodes"] = -1
    with pytest.raises(FleetError, match=r"clusters\[1\]\.pools\[0\]\.maxNodes"):
        parse_fleet(document)
    document = fleet([{"cluster": "cheap", "start": True, "end": "1h"}])
    document["failoverAfter"] = -3
    document["clusters"][0]["pools"][0]["nodeBootDelay"] = "5 minutes"
    with pytest.raises(FleetError) as info:
        parse_fleet(document)
    assert str(info.value).splitlines() == [
        'clusters[0].pools[0].nodeBootDelay: Invalid value: "5 minutes": "5 minutes" is not a duration such as 90s, 10m or 1h',
        "failoverAfter: Invalid value: -3: must not be negative",
        "outages[0].start: Invalid value: true: must be a duration such as 90s, 10m or 1h, or a number of seconds",
    ]
    path = tmp_path / "fleet.yaml"
    path.write_text("clusters: [")
    with pytest.raises(FleetError, match="not YAML"):
        load_fleet(path)


def test_the_example_fleet_prices_its_pools_from_the_catalog_or_its_own_price():
    example = load_fleet("examples/fleets/onprem-and-cloud.yaml")
    prices = {c.name: c.pools[0].price for c in example.clusters}
    assert prices == {"onprem": 1.2, "cloud": 2.5}  # cloud: the catalog's bm3 H100 flavor
    assert example.clusters[1].pools[0].boot_s == 300.0  # bare metal's boot


def test_replay_cli_with_a_fleet_prints_cost_per_cluster(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        + "".join(f"2023-11-16 18:17:{i:02d}.000000,1000,0\n" for i in range(0, 60, 3))
    )
    path = tmp_path / "fleet.yaml"
    path.write_text(json.dumps(fleet([{"cluster": "cheap", "start": 20, "end": 40}])))
    runner = CliRunner()
    out = runner.invoke(sim_app, ["replay", "--trace", str(trace), "--fleet", str(path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert [c["name"] for c in data["clusters"]] == ["dear", "cheap"]
    assert data["cost"] == pytest.approx(sum(c["cost"] for c in data["clusters"]))
    assert data["requests"] == 20 and data["failed_requests"] == 0
    table = runner.invoke(sim_app, ["replay", "--trace", str(trace), "--fleet", str(path)])
    assert table.exit_code == 0 and "fleet (fill)" in table.output and "cheap" in table.output
    static = runner.invoke(
        sim_app, ["replay", "--trace", str(trace), "--fleet", str(path), "--policy", "static"]
    )
    assert static.exit_code == 2 and "autoscaled policy" in static.output
    # --outage replaces the file's outages: the cheap cluster out from 30 s for 10 s.
    moved = runner.invoke(
        sim_app,
        ["replay", "--trace", str(trace), "--fleet", str(path), "--outage", "cheap@30s+10s", "--json"],
    )
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.output)["outages"] == [{"cluster": "cheap", "start_s": 30.0, "end_s": 40.0}]
    for bad, cause in (("cheap", "is not CLUSTER@START+LENGTH"), ("cheap@1x+2m", "is not a duration")):
        out = runner.invoke(sim_app, ["replay", "--trace", str(trace), "--fleet", str(path), "--outage", bad])
        assert out.exit_code == 2 and "--outage" in out.output and cause in out.output
    alone = runner.invoke(sim_app, ["replay", "--trace", str(trace), "--outage", "cheap@1m+1m"])
    assert alone.exit_code == 2 and "needs --fleet" in alone.output
    unknown = runner.invoke(
        sim_app, ["replay", "--trace", str(trace), "--fleet", str(path), "--outage", "moon@1m+1m"]
    )
    assert unknown.exit_code == 1 and 'outages[0].cluster: Unsupported value: "moon"' in unknown.output
    missing = runner.invoke(sim_app, ["replay", "--trace", str(trace), "--fleet", str(tmp_path / "no.yaml")])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_replay_fleet_refuses_an_empty_trace():
    with pytest.raises(ValueError, match="no requests"):
        replay_fleet([], parse_fleet(fleet()))


def test_placement_takes_the_named_clusters_then_the_selector_matches_by_name():
    document = fleet()
    spot_pool = document["clusters"][1]["pools"]
    document["clusters"][1]["labels"] = {"spot": "true"}
    document["clusters"].append({"name": "b-spot", "labels": {"spot": "true"}, "pools": spot_pool})
    document["placement"] = {
        "policy": "fill",
        "clusters": ["dear"],
        "clusterSelector": {"matchLabels": {"spot": "true"}},
    }
    assert [c.name for c in parse_fleet(document).allowed()] == ["dear", "b-spot", "cheap"]
    document["placement"] = {"policy": "fill", "clusterSelector": {"matchLabels": {"spot": "no"}}}
    with pytest.raises(FleetError, match="placement.clusterSelector: matches no cluster"):
        parse_fleet(document)


def test_replacements_that_need_a_node_wait_for_its_boot_then_their_start():
    document = fleet([{"cluster": "cheap", "start": 100, "end": 400}])
    dear_pool = document["clusters"][0]["pools"][0]
    dear_pool["minNodes"], dear_pool["nodeBootDelay"] = 0, "60s"
    loop, result = run([req(0, 1000), req(500, 1000)], document, replicas=2)
    # Suspect at 100 s; the node scan (every 10 s) asks the dear cluster for a node at 100 s; it
    # joins 60 s later, and the replicas placed on it serve 20 s after that.
    dear_nodes = [(n.asked_at, n.ready_at) for n in loop.nodes if n.cluster == 0]
    assert dear_nodes == [(100.0, 160.0)]
    dear = [(r.started_at, r.ready_at) for r in loop.replicas if r.cluster == 0]
    assert dear == [(160.0, 180.0), (160.0, 180.0)]
    usage = {c.name: c for c in result.clusters}
    assert usage["dear"].node_hours == pytest.approx((501 - 100) / 3600)
    assert usage["dear"].node_cost == pytest.approx((501 - 100) / 3600 * 4 * 3.0)


def test_the_fleet_chart_is_written(tmp_path):
    pytest.importorskip("matplotlib")  # the bench extra; the plot is optional
    from kgpu.cli.replay import plot_fleet

    _, result = run(outage_trace(), fleet([{"cluster": "cheap", "start": 100, "end": 400}]), replicas=2)
    path = tmp_path / "fleet.png"
    plot_fleet(result, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class HoldsSpeculative(FleetReplayLoop):
    """The fleet replay with a policy that always asks for 4 replicas, ``speculative`` of them held
    for load not seen yet (kgpu's headroom); the loop, the split and the cost are the real ones."""

    def __init__(self, trace, document: dict, speculative: int) -> None:
        super().__init__(trace, parse_fleet(document), "kgpu", ServiceModel(), fixed(1), 10.0)
        self.speculative = speculative

    def _policies(self, now, active):
        return {"kgpu": lambda ctx, state: ScalingDecision(4, state, speculative=self.speculative)}


@pytest.mark.parametrize(("speculative", "cheap", "dear"), [(0, 2, 2), (2, 2, 0), (3, 2, 0)])
def test_speculative_replicas_take_only_the_cheapest_clusters_booted_gpus(speculative, cheap, dear):
    # 4 asked at the first tick (2 s): the cheap cluster's 2 GPUs hold 2, the dear one takes the rest
    # of the load seen; what is speculative finds the cheap cluster full and is dropped.
    trace = [req(0, 1000), req(100, 1000)]  # the replay ends at 101 s
    loop = HoldsSpeculative(trace, fleet(), speculative)
    result = loop.fleet_result(loop.run(), 101.0)
    by_cluster = {c.name: c for c in result.clusters}
    assert (by_cluster["cheap"].max_replicas, by_cluster["dear"].max_replicas) == (cheap, dear)
    assert by_cluster["dear"].cost == pytest.approx(dear * (101 - 2) / 3600 * 3.0)
