"""Node-pool decisions: least-waste scale-up, scale-down of unneeded nodes, cool-down, limits."""

from __future__ import annotations

from kgpu.autoscaling.nodepool import NodeView, PendingReplica, PoolState, PoolView, decide_node_pools


def pool(name="a", model="H100-80GB", per_node=8, nodes=(), upcoming=0, min_nodes=0, max_nodes=4) -> PoolView:
    return PoolView(name, model, per_node, min_nodes, max_nodes, tuple(nodes), upcoming)


def test_least_waste_pool_grows():
    pools = [pool("big", per_node=8), pool("small", per_node=4)]
    d = decide_node_pools(pools, [PendingReplica()] * 3, now=0)
    assert d.scale_up == {"small": 1}  # 1 of 4 GPUs idle beats 5 of 8


def test_enough_new_nodes_for_all_pending():
    d = decide_node_pools([pool(per_node=4)], [PendingReplica()] * 6, now=0)
    assert d.scale_up == {"a": 2}


def test_only_a_pool_whose_flavor_fits_grows():
    pools = [pool("l4", model="L4", per_node=4), pool("h100", model="H100-80GB", per_node=8)]
    d = decide_node_pools(pools, [PendingReplica(gpu_models=("H100-80GB",))], now=0)
    assert d.scale_up == {"h100": 1}
    too_big = decide_node_pools(pools, [PendingReplica(gpus=16)], now=0)
    assert too_big.scale_up == {} and too_big.unschedulable == 1


def test_max_nodes_and_upcoming_nodes_are_respected():
    full = pool(nodes=[NodeView("n0", 8, 8)], max_nodes=1)
    assert decide_node_pools([full], [PendingReplica()], now=0).scale_up == {}
    coming = pool(nodes=[NodeView("n0", 8, 8)], upcoming=1)
    assert decide_node_pools([coming], [PendingReplica()] * 8, now=0).scale_up == {}
    assert decide_node_pools([coming], [PendingReplica()] * 9, now=0).scale_up == {"a": 1}


def test_underused_node_is_removed_after_the_unneeded_time():
    nodes = [NodeView("n0", 8, 3), NodeView("n1", 8, 4)]  # n0 below half, n1 at half
    first = decide_node_pools([pool(nodes=nodes)], [], now=0)
    assert first.remove == {} and set(first.state.unneeded_since) == {"n0"}
    early = decide_node_pools([pool(nodes=nodes)], [], now=599, state=first.state)
    assert early.remove == {}
    due = decide_node_pools([pool(nodes=nodes)], [], now=600, state=early.state)
    assert due.remove == {"a": ["n0"]}


def test_node_that_becomes_busy_again_restarts_its_clock():
    state = PoolState(unneeded_since={"n0": 0.0})
    busy = decide_node_pools(
        [pool(nodes=[NodeView("n0", 8, 6), NodeView("n1", 8, 0)])], [], now=300, state=state
    )
    assert "n0" not in busy.state.unneeded_since


def test_no_scale_down_within_cool_down_after_scale_up():
    nodes = [NodeView("n0", 8, 0), NodeView("n1", 8, 2)]
    state = PoolState(unneeded_since={"n0": 0.0}, last_scale_up_at=100.0)
    assert decide_node_pools([pool(nodes=nodes)], [], now=650, state=state).remove == {}
    assert decide_node_pools([pool(nodes=nodes)], [], now=700, state=state).remove == {"a": ["n0"]}


def test_scale_down_keeps_min_nodes_blockers_and_room_for_replicas():
    since = PoolState(unneeded_since={"n0": 0.0, "n1": 0.0})
    two_empty = [NodeView("n0", 8, 0), NodeView("n1", 8, 0)]
    assert decide_node_pools([pool(nodes=two_empty, min_nodes=1)], [], now=1000, state=since).remove == {
        "a": ["n0"]
    }
    blocked = [NodeView("n0", 8, 0, removable=False), NodeView("n1", 8, 0, removable=False)]
    assert decide_node_pools([pool(nodes=blocked)], [], now=1000, state=since).remove == {}
    # Both nodes hold 3 GPUs; after removing one the other has room for its 3, not for 6 more.
    crowded = [NodeView("n0", 8, 3), NodeView("n1", 8, 3)]
    assert decide_node_pools([pool(nodes=crowded)], [], now=1000, state=since).remove == {"a": ["n0"]}
