"""Replay of small synthetic traces whose results can be checked by hand."""

from __future__ import annotations

import pytest

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.sim.azure_trace import TraceError, TraceRequest, load_azure_trace
from kgpu.sim.hold_tuning import HoldTuning
from kgpu.sim.replay import ReplayLoop, ServiceModel, default_spec, find_static, replay


def req(t: float, context: int, generated: int = 0) -> TraceRequest:
    return TraceRequest(t, context, generated)


def test_one_request_alone_from_zero_waits_for_a_cold_start():
    spec = AutoscalingSpec(policy="kgpu", min_replicas=0, max_replicas=8, target=16)
    # work = 1000 + 10 * 100 = 2000 units; arrives exactly on a tick, a replica starts at once.
    result = replay([req(6.0, 1000, 100)], "kgpu", spec=spec, initial_replicas=0)
    assert result.p99_latency_s == pytest.approx(20.0 + 2.0)
    assert result.slo_met == 0  # 22 s > 2 + 2 * 2 s
    assert result.failed_requests == 0
    assert result.missed_causes == ["cold-start"]  # its replica became ready after it arrived


def test_requests_up_to_the_batch_run_at_full_speed():
    result = replay([req(0, 1000), req(0, 3000)], "static", static_replicas=1)
    assert result.max_latency_s == pytest.approx(3.0)  # both alone-speed: 1 s and 3 s
    assert result.p50_latency_s == pytest.approx(1.0)


def test_processor_sharing_beyond_eight_and_queue_beyond_sixteen():
    result = replay([req(0, 1000)] * 17, "static", static_replicas=1, timeline_every_s=0.5)
    # 16 in flight at 500 units/s finish at 2 s; the 17th waits, then runs alone for 1 s.
    assert result.p50_latency_s == pytest.approx(2.0)
    assert result.max_latency_s == pytest.approx(3.0)
    assert max(f["queue"] for f in result.timeline) == 1
    assert result.slo_attainment_pct == 100.0  # SLO for 1000 units: 2 + 2 = 4 s


def test_ten_in_flight_share_the_replica():
    result = replay([req(0, 1000)] * 10, "static", static_replicas=1)
    assert result.max_latency_s == pytest.approx(1000 / (1000 * 8 / 10))


def test_slo_miss_when_the_queue_is_long():
    result = replay([req(0, 1000)] * 40, "static", static_replicas=1)
    # Waves of 16 finish at 2 s and 4 s (SLO 4 s met); the last 8 run at full speed, done at 5 s.
    assert result.slo_met == 32
    assert result.slo_attainment_pct == pytest.approx(80.0)


def test_missed_requests_are_listed_by_arrival_time():
    trace = [req(0, 1000)] * 40 + [req(100, 1000)]
    result = replay(trace, "static", static_replicas=1)
    # The 8 requests of the last wave at t=0 miss; the lone request at 100 s meets its SLO.
    assert result.missed_arrivals_s == [0.0] * 8
    assert result.missed_causes == ["queueing"] * 8  # on the one replica, ready before they arrived
    assert "missed_arrivals_s" not in result.to_dict() and "missed_causes" not in result.to_dict()


def test_a_request_that_waits_for_a_new_node_misses_for_the_node():
    # One node of 8 GPUs held by 8 busy replicas (floor 8): the 9th replica needs a node (120 s).
    spec = AutoscalingSpec(policy="kgpu", min_replicas=8, max_replicas=16, target=16)
    trace = [req(0.0, 100_000)] * (8 * 16) + [req(1.0, 1000)] * 40
    result = replay(trace, "kgpu", spec=spec)
    assert "waiting-for-node" in result.missed_causes
    assert set(result.missed_causes) <= {"queueing", "waiting-for-node"}


def test_find_static_returns_the_smallest_count_meeting_the_target():
    result = find_static([req(0, 1000)] * 40)
    assert result.replicas == 2 and result.slo_attainment_pct == 100.0


def test_gpu_and_node_hours_count_from_start_to_stop():
    result = replay([req(0, 3_600_000)], "static", static_replicas=2)
    assert result.duration_s == pytest.approx(3600.0)
    assert result.gpu_hours == pytest.approx(2.0)
    assert result.node_hours == pytest.approx(1.0)


def test_request_fails_when_no_capacity_can_come():
    model = ServiceModel(initial_nodes=0, max_nodes=0, queue_timeout_s=30.0)
    spec = AutoscalingSpec(policy="kpa", min_replicas=0, max_replicas=1)
    result = replay([req(0, 1000)], "kpa", model=model, spec=spec, initial_replicas=0)
    assert result.failed_requests == 1 and result.completed == 0
    assert result.duration_s == pytest.approx(30.0)


def test_node_joins_after_its_start_up_time():
    model = ServiceModel(gpus_per_node=1, max_nodes=2)
    spec = AutoscalingSpec(policy="kgpu", min_replicas=1, max_replicas=2, target=16, target_utilization=1.0)
    # 32 requests of long work keep demand at two replicas; the second needs a second node.
    result = replay([req(0, 200_000)] * 32, "kgpu", model=model, spec=spec, timeline_every_s=1.0)
    assert result.node_scale_events >= 1
    second_ready = next(f["t"] for f in result.timeline if f["ready"] == 2)
    # Asked at the first node scan (10 s), joins 120 s later, replica serves 20 s after that.
    assert second_ready == pytest.approx(150.0)


def test_kpa_scales_from_zero_and_back():
    spec = AutoscalingSpec(
        policy="kpa", min_replicas=0, max_replicas=4, target=16, scale_to_zero_idle_seconds=30
    )
    result = replay([req(1, 1000), req(400, 1000)], "kpa", spec=spec, timeline_every_s=1.0)
    assert result.failed_requests == 0 and result.completed == 2
    assert any(f["replicas"] == 0 for f in result.timeline if 100 < f["t"] < 400)
    assert result.scale_events >= 2


def test_unknown_policy_and_bad_static_count():
    with pytest.raises(ValueError, match="unknown policy 'rps'"):
        replay([req(0, 1)], "rps")
    with pytest.raises(ValueError, match="static replicas must be between 1 and 32"):
        replay([req(0, 1)], "static", static_replicas=0)


def test_missing_trace_names_the_public_source(tmp_path):
    with pytest.raises(TraceError, match="Azure/AzurePublicDataset"):
        load_azure_trace(tmp_path / "nope.csv")


def test_trace_is_read_relative_to_the_first_request(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:05.5000000,10,2\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
    )
    trace = load_azure_trace(path)
    assert [r.context_tokens for r in trace] == [4808, 10]
    assert trace[1].arrival_s == pytest.approx(1.52004)
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens\n")
    with pytest.raises(TraceError, match="GeneratedTokens"):
        load_azure_trace(bad)


ONE_AT_A_TIME = {"max_in_flight": 1, "full_speed_batch": 1}


def test_gateway_queue_serves_the_earliest_client_deadline_first():
    # One request at a time. A runs 0-1 s; a long request L (5000 units, deadline 12.1 s) and a
    # short one S (1000 units, deadline 4.2 s) wait for it.
    trace = [req(0, 1000), req(0.1, 5000), req(0.2, 1000)]
    fifo = replay(trace, "static", ServiceModel(queue="fifo", **ONE_AT_A_TIME), static_replicas=1)
    edf = replay(trace, "static", ServiceModel(queue="deadline", **ONE_AT_A_TIME), static_replicas=1)
    # FIFO: L 1-6 s, S 6-7 s (latency 6.8 s > 4 s). Deadline order: S 1-2 s, L 2-7 s (6.9 s <= 12 s).
    assert fifo.missed_arrivals_s == [0.2]
    assert edf.missed_arrivals_s == []
    assert edf.max_latency_s == pytest.approx(6.9)


def test_a_request_already_past_its_deadline_waits_behind_those_that_can_make_it():
    # A runs 0-3 s. H (400 units, deadline 0.1 + 2 + 0.8 = 2.9 s) is late when A ends;
    # B (1000 units, deadline 4.2 s) can still make it if it goes first.
    trace = [req(0, 3000), req(0.1, 400), req(0.2, 1000)]
    result = replay(trace, "static", ServiceModel(queue="deadline", **ONE_AT_A_TIME), static_replicas=1)
    # B 3-4 s (latency 3.8 s, met), then H 4-4.4 s (latency 4.3 s, missed but served).
    assert result.missed_arrivals_s == [0.1]
    assert result.completed == 3 and result.failed_requests == 0
    # In arrival order H would go first and make B late as well (B done at 4.4 s: 4.2 s > 4 s).
    fifo = replay(trace, "static", ServiceModel(queue="fifo", **ONE_AT_A_TIME), static_replicas=1)
    assert fifo.missed_arrivals_s == [0.1, 0.2]


def test_container_concurrency_holds_the_excess_at_the_gateway_in_deadline_order():
    # Replicas that could hold two requests, sharing one unit of speed; the gateway lets them hold one.
    trace = [req(0, 1000), req(0.1, 5000), req(0.2, 1000)]
    shared = ServiceModel(max_in_flight=2, full_speed_batch=1)
    limited = ServiceModel(max_in_flight=2, full_speed_batch=1, container_concurrency=1)
    assert (shared.per_replica_limit, limited.per_replica_limit) == (2, 1)
    both = replay(trace, "static", shared, static_replicas=1, timeline_every_s=0.05)
    one = replay(trace, "static", limited, static_replicas=1, timeline_every_s=0.05)
    assert max(f["in_flight"] for f in both.timeline) == 2
    assert max(f["in_flight"] for f in one.timeline) == 1
    assert max(f["queue"] for f in one.timeline) == 2
    # One at a time, earliest deadline first: A 0-1 s, S 1-2 s, L 2-7 s; latencies 1, 1.8, 6.9 s.
    assert one.missed_arrivals_s == [] and one.max_latency_s == pytest.approx(6.9)
    assert one.p50_latency_s == pytest.approx(1.8)
    # Two at a time: A and L share until A ends at 1.9 s, then S and L until S ends at 3.9 s (3.7 s).
    assert both.max_latency_s == pytest.approx(6.9) and both.p50_latency_s == pytest.approx(3.7)


def test_knative_and_hpa_targets_follow_container_concurrency_and_kgpus_does_not():
    model = ServiceModel(container_concurrency=8)
    assert default_spec("kpa", model).target == 8 and default_spec("hpa", model).target == 8
    assert default_spec("kgpu", model).target == 16 == default_spec("kpa").target
    assert default_spec("kgpu-min4", model).min_replicas == 4
    with pytest.raises(ValueError, match="container_concurrency must be >= 0, got -2"):
        ServiceModel(container_concurrency=-2)


def test_kgpu_default_burst_memory_equals_its_hold_tuning_spelt_out():
    # Two bursts 200 s apart: the default memory and HoldTuning() (concurrency, fixed window) agree.
    trace = [req(t / 10, 2000, 50) for t in range(0, 50)] + [
        req(200 + t / 10, 2000, 50) for t in range(0, 80)
    ]
    default = replay(trace, "kgpu")
    spelt = replay(trace, "kgpu", tuning=HoldTuning())
    assert (default.gpu_hours, default.slo_met, default.scale_events) == (
        spelt.gpu_hours,
        spelt.slo_met,
        spelt.scale_events,
    )
    work = replay(trace, "kgpu", tuning=HoldTuning(signal="work", half_life_s=60, replica_throughput=8000))
    assert work.completed == len(trace)
    deadline = replay(trace, "kgpu", tuning=HoldTuning(reactive="deadline", replica_throughput=8000))
    assert deadline.completed == len(trace)


def test_a_request_times_out_at_the_instant_its_timeout_event_is_due():
    # 0.1 + 600 - 600 is not 0.1 in floating point; expiring "arrived by now - timeout" kept the
    # request while the loop's next event (arrival + timeout) was already now: it woke there forever.
    arrival = next(a / 7 for a in range(1, 1000) if a / 7 + 600.0 - 600.0 < a / 7)
    loop = ReplayLoop([req(arrival, 100)], "static", ServiceModel(), None, 1, 10.0)
    loop.queue.push(0, arrival, arrival + 2.0)
    assert loop._expire(arrival + 600.0) == 1 and len(loop.queue) == 0


def test_arrived_work_is_what_the_gateway_knows_not_the_answer_still_to_come():
    # The first request is estimated by its prompt alone (nothing completed yet); it finishes at
    # 2.5 s (2,000 units at 1,000/s), so the second is its prompt plus 10 x the first's 100 tokens,
    # not plus 10 x its own 300.
    trace = [req(0.5, 1000, 100), req(3.0, 500, 300)]
    loop = ReplayLoop(trace, "kgpu", ServiceModel(), None, None, 10.0)
    loop.run()
    arrived = {s.time: s.arrived_work for s in loop.samples if s.arrived_work}
    assert arrived == {2.0: 1000.0, 4.0: 1500.0}


def test_kgpu_stops_no_replica_while_it_starts_when_a_burst_pauses():
    # 60 requests in 6 s, a 4 s lull, then 120 more: the lull lowers the demand while the replicas
    # asked for by the first burst start. A scale-down then stops unready replicas first, and the
    # second burst starts them again (before the policy waited for them: 6 stopped, 11 started).
    trace = [TraceRequest(t / 10, 1000, 20) for t in range(60)]
    trace += [TraceRequest(10 + t / 10, 1000, 20) for t in range(120)]
    spec = default_spec("kgpu").model_copy(update={"min_replicas": 1})
    loop = ReplayLoop(trace, "kgpu", ServiceModel(), spec, None, 10.0)
    result = loop.run()
    assert result.stopped_before_ready == 0
    assert len(loop.replicas) == result.max_replicas == 8  # each replica started once
